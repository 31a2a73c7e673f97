"""compress and distill take their shared options from one declaration (edgekd.cli.TRAINING)."""

from __future__ import annotations

import typer.main

from edgekd import cli


def _params(command: str) -> dict:
    group = typer.main.get_command(cli.app)
    return {p.name: p for p in group.commands[command].params}


def test_compress_and_distill_declare_the_training_options_alike() -> None:
    compress, distill = _params("compress"), _params("distill")
    assert set(distill) == set(cli.TRAINING)
    assert set(compress) == set(cli.TRAINING) | set(cli.COMPRESS)
    for name in cli.TRAINING:
        a, b = compress[name], distill[name]
        assert (a.opts, a.secondary_opts, a.help, a.default, a.multiple) == (
            b.opts,
            b.secondary_opts,
            b.help,
            b.default,
            b.multiple,
        ), name


def test_every_training_option_is_a_config_field_or_handled_by_the_cli() -> None:
    from dataclasses import fields

    from edgekd.config import CompressConfig

    config = {f.name for f in fields(CompressConfig)}
    # spelled differently on the command line, or not part of the config
    cli_only = {"out", "resume", "loss_weight", "pairs", "config", "ptq", "as_json"}
    assert set(cli.TRAINING) | set(cli.COMPRESS) <= config | cli_only
