"""Run configs as TOML: ``compress --config FILE`` reads one; every run folder gets ``config.toml``.

A config file holds ``CompressConfig`` fields as top-level keys (``loss_weights`` as a table).
TOML has no null: a field left out takes its default, and every field whose value is None
defaults to None, so the written file replays the resolved config exactly. Paths in the file
are read like command-line ones, relative to the working directory.
"""

from __future__ import annotations

import json
import math
import tomllib
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from edgekd.config import CompressConfig
from edgekd.errors import BadInput, printable
from edgekd.toml_file import read_toml
from edgekd.validation import type_name

HEADER = (
    "# edgekd run config: the resolved options of this run.\n"
    "# Replay it with: edgekd compress --config RUN/config.toml --out NEW_FOLDER "
    "(command-line options override it).\n"
)


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(CompressConfig)


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (an int is accepted as a float); raise TypeError if it is not."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is not type(None):
                try:
                    return _coerce(value, arg)
                except TypeError:
                    pass
        raise TypeError
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(tp)
        return [_coerce(v, item) for v in value]
    if origin is dict and isinstance(value, dict):
        key, item = typing.get_args(tp)
        return {_coerce(k, key): _coerce(v, item) for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer past float's range is no number edgekd can use
            raise TypeError from None
    if tp in (str, int, bool) and type(value) is tp:
        return value
    raise TypeError


def check_config_dict(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` with each key a CompressConfig field of the right type; else one-line BadInput."""
    hints = _field_types()
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise BadInput(
            f"{where}: unknown key(s) {', '.join(map(printable, unknown))}; "
            f"known: {', '.join(sorted(hints))}"
        )
    out = {}
    for key, value in values.items():
        try:
            out[key] = _coerce(value, hints[key])
        except TypeError:
            shown = _shown(value, key)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise BadInput(f"{where}: {key} = {shown}: expected {type_name(hints[key])}") from None
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The fields a TOML config file sets, checked (unknown keys and wrong types are errors)."""
    path = Path(path)
    where = printable(path)
    try:
        values = read_toml(path)
    except FileNotFoundError:
        raise BadInput(f"--config {where}: no such file") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"--config {where}: not a readable TOML file ({e})") from None
    return check_config_dict(values, where)


def _shown(value: Any, key: str, depth: int = 2) -> str:
    """``value`` for a one-line message, as TOML: arrays and tables ``depth`` levels deep."""
    if isinstance(value, list | dict) and depth == 0:
        return "[...]" if isinstance(value, list) else "{...}"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v, key, depth - 1) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{_toml_string(str(k))} = {_shown(v, key, depth - 1)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    return _toml_value(value, key) if isinstance(value, str | int | float) else repr(value)


def _toml_string(text: str) -> str:
    # JSON's escapes are TOML's, except that TOML wants DEL escaped and JSON leaves it raw
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v, key) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(
            f"{_toml_string(str(k))} = {_toml_value(v, key)}" for k, v in value.items()
        )
        return "{" + (f" {items} " if items else "") + "}"
    raise TypeError(f"config field {key}: cannot write {type(value).__name__} as TOML")


def config_toml(cfg: CompressConfig) -> str:
    """``cfg`` as a TOML document that ``load_config_file`` reads back to the same config."""
    defaults = CompressConfig()
    lines = [HEADER]
    for f in fields(CompressConfig):
        value = getattr(cfg, f.name)
        if value is None:
            if getattr(defaults, f.name) is not None:  # cannot happen with today's fields
                raise TypeError(f"config field {f.name}: None is not its default; TOML has no null")
            lines.append(f"# {f.name}: not set")
            continue
        lines.append(f"{f.name} = {_toml_value(value, f.name)}")
    text = "\n".join(lines) + "\n"
    if CompressConfig(**check_config_dict(tomllib.loads(text), "config.toml")) != cfg:
        raise AssertionError("config.toml does not read back to the run's config")  # a bug
    return text
