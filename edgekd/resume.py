"""What ``--resume`` may change: a run's inputs, compared with those it was started with.

A run records its config (``config.json``) and content fingerprints of its input files
(``logs/inputs.json``: teacher code and weights, data, target profile, student factory,
calibration manifest). On ``--resume`` each difference is assigned to the first stage it
affects (:data:`FIRST_STAGE`): it is applied when that stage has not started yet, and refused
otherwise, in one line naming every change, so that a run never mixes two sets of inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekd.errors import BadInput

# The config fields (and input fingerprints) a resumed run may change, and the first stage each
# one affects; anything not listed shapes the plan (sizing) or training, and is always refused.
# None: no effect on any output (where the teacher cache lives).
FIRST_STAGE: dict[str, str | None] = {
    "cache_dir": None,
    "qat_epochs": "quantize",
    "qat_lr": "quantize",
    "calib_samples": "quantize",
    "calib_manifest": "quantize",
    "calib_manifest file": "quantize",
    "calibrator": "quantize",
    "keep_float": "quantize",
    "sensitivity": "quantize",
    "weight_bits": "quantize",
    "max_accuracy_drop": "validate",
    "int8_must_pay": "validate",
    "min_kd_gain": "validate",
}


def changes(
    old_config: dict[str, Any],
    new_config: dict[str, Any],
    old_inputs: dict[str, str | None],
    new_inputs: dict[str, str | None],
) -> dict[str, str]:
    """What differs, as ``{name: "old → new"}`` for config fields and ``{"NAME file": "changed"}``
    for input files whose contents differ."""
    out = {
        key: f"{old_config.get(key)!r} → {value!r}"
        for key, value in new_config.items()
        if old_config.get(key) != value
    }
    for name, value in new_inputs.items():
        if name in old_inputs and old_inputs[name] != value:
            out[f"{name} file"] = "contents changed"
    return out


def check(changed: dict[str, str], started: Callable[[str], bool], where: str) -> list[str]:
    """Refuse (:class:`BadInput`) when any change touches a stage that has started; otherwise
    return the changes, to be applied (each line names the stage it applies from)."""
    refused = {
        name: text
        for name, text in changed.items()
        if name not in FIRST_STAGE or (FIRST_STAGE[name] is not None and started(FIRST_STAGE[name]))
    }
    if refused:
        said = ", ".join(f"{name} ({text})" for name, text in refused.items())
        raise BadInput(
            f"--resume: {where} was made with other inputs: {said}; they would mix with what "
            "it already computed: use a new --out"
        )
    return [f"{name} {text} ({_applies(FIRST_STAGE[name])})" for name, text in changed.items()]


def _applies(stage: str | None) -> str:
    return f"applies from {stage} on" if stage else "no output depends on it"
