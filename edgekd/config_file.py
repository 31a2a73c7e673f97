"""Run configs as TOML: ``compress --config FILE`` reads one; every run folder gets ``config.toml``.

A config file holds ``CompressConfig`` fields as top-level keys (``loss_weights`` as a table).
TOML has no null: a field left out takes its default, and every field whose value is None
defaults to None, so the written file replays the resolved config exactly. Paths in the file
are read like command-line ones, relative to the working directory.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import tomli_w

from edgekd.config import CompressConfig
from edgekd.errors import BadInput, printable
from edgekd.toml_file import read_toml
from edgekd.typed_toml import table_fields

HEADER = (
    "# edgekd run config: the resolved options of this run.\n"
    "# Replay it with: edgekd compress --config RUN/config.toml --out NEW_FOLDER "
    "(command-line options override it).\n"
)


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
    return table_fields(CompressConfig, values, where)


def config_toml(cfg: CompressConfig) -> str:
    """``cfg`` as a TOML document that ``load_config_file`` reads back to the same config: the
    fields set, after a comment line for each one that is not (None)."""
    defaults = CompressConfig()
    values = {f.name: getattr(cfg, f.name) for f in fields(CompressConfig)}
    unset = [name for name, value in values.items() if value is None]
    for name in unset:
        if getattr(defaults, name) is not None:  # cannot happen with today's fields
            raise TypeError(f"config field {name}: None is not its default; TOML has no null")
    text = HEADER + "".join(f"# {name}: not set\n" for name in unset) + "\n"
    text += tomli_w.dumps({k: v for k, v in values.items() if v is not None})
    if CompressConfig(**table_fields(CompressConfig, tomllib.loads(text), "config.toml")) != cfg:
        raise AssertionError("config.toml does not read back to the run's config")  # a bug
    return text
