"""What ``--resume`` may change: a run's inputs, compared with those it was started with.

A run records its config (``config.json``) and content fingerprints of its input files
(``logs/inputs.json``: teacher code and weights, data, target profile, student factory,
calibration manifest). On ``--resume`` each difference is assigned to the first stage it
affects (``first_stage``: the stage table's, :data:`edgekd.pipeline.stages.FIRST_STAGE`): it is
applied when that stage has not started yet, and refused
otherwise, in one line naming every change, so that a run never mixes two sets of inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edgekd.errors import BadInput


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


def check(
    changed: dict[str, str],
    started: Callable[[str], bool],
    where: str,
    first_stage: Mapping[str, str | None],
) -> list[str]:
    """Refuse (:class:`BadInput`) when any change is not in ``first_stage`` (what may change, and
    the first stage it affects; None: no output) or touches a stage that has started; otherwise
    return the changes, to be applied (each line names the stage it applies from)."""
    refused = {
        name: text
        for name, text in changed.items()
        if name not in first_stage or (first_stage[name] is not None and started(first_stage[name]))
    }
    if refused:
        said = ", ".join(f"{name} ({text})" for name, text in refused.items())
        raise BadInput(
            f"--resume: {where} was made with other inputs: {said}; they would mix with what "
            "it already computed: use a new --out"
        )
    return [f"{name} {text} ({_applies(first_stage[name])})" for name, text in changed.items()]


def _applies(stage: str | None) -> str:
    return f"applies from {stage} on" if stage else "no output depends on it"
