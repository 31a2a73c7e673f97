"""A TOML table checked against a dataclass: each key one of its fields, each value converted to the
field's type hint (a nested dataclass from a table of its own). Every problem raises
:class:`~edgekd.errors.BadInput` in one line naming the file and the key."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields, is_dataclass
from functools import cache
from typing import Any

from edgekd.errors import BadInput, printable, shown

# A field's requirement beyond its type: given the value as read, the field's type (None left
# out) and the field, what the value must be, in words, when it is not; None when it is fine.
Rule = Callable[[Any, Any, Field], str | None]


def type_name(tp: Any, article: bool = False) -> str:
    """A type in words (``list[float] | None``: "a list of numbers"; ``int``: "integer", with
    ``article`` "an integer")."""
    if tp is type(None):
        return "nothing"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(type_name(a, article) for a in args)
    if origin in (list, tuple):
        return f"a list of {type_name(typing.get_args(tp)[0])}s"
    if origin is dict:
        return f"a table of {type_name(typing.get_args(tp)[1])}s"
    if is_dataclass(tp):
        return "a table"
    word = {str: "string", int: "integer", float: "number", bool: "boolean"}[tp]
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}" if article else word


def convert(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (an int is accepted as a float, a bool as neither; a list as a
    tuple, a tuple not as a list); raise TypeError if it is not one."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                try:
                    return convert(value, arg)
                except TypeError:
                    pass
        raise TypeError
    sequence = list if origin is list else list | tuple  # a TOML array is a list
    if origin in (list, tuple) and isinstance(value, sequence):
        item = typing.get_args(tp)[0]
        return origin(convert(v, item) for v in value)
    if origin is dict and isinstance(value, dict):
        key, item = typing.get_args(tp)
        return {convert(k, key): convert(v, item) for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer past float's range is no number edgekd can use
            raise TypeError from None
    if tp in (str, int, bool) and type(value) is tp:
        return value
    raise TypeError


@cache
def hints(cls: type) -> dict[str, Any]:
    """The type hints of dataclass ``cls``'s fields."""
    return typing.get_type_hints(cls)


def table_fields(
    cls: type,
    table: dict[str, Any],
    where: str,
    *,
    prefix: str = "",
    preset: dict[str, Any] | None = None,
    rule: Rule | None = None,
) -> dict[str, Any]:
    """The fields of dataclass ``cls`` that ``table`` sets, converted; ``preset`` ones are no keys.

    ``prefix`` names the table in messages (``"hardware."``); ``rule`` adds each field's own
    requirement (and applies in nested tables too). A field without a default must be given.
    """
    specs = {f.name: f for f in fields(cls) if f.name not in (preset or {})}
    unknown = [k for k in table if k not in specs]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(specs), n=1)
        hint = (
            f"did you mean {prefix}{close[0]}?"
            if close
            else f"known: {', '.join(prefix + k for k in sorted(specs))}"
        )
        names = ", ".join(printable(prefix + k) for k in unknown)
        raise BadInput(f"{where}: unknown key(s) {names}; {hint}")
    values = dict(preset or {})
    for name, spec in specs.items():
        if name in table:
            values[name] = _value(table[name], hints(cls)[name], spec, where, prefix + name, rule)
        elif spec.default is MISSING and spec.default_factory is MISSING:
            raise BadInput(f"{where}: missing required field {prefix}{name}")
    return values


def build(cls: type, table: Any, where: str, *, prefix: str = "", **options: Any) -> Any:
    """Dataclass ``cls`` made from TOML table ``table`` (see :func:`table_fields`)."""
    if not isinstance(table, dict):
        raise BadInput(f"{where}: {prefix.rstrip('.')} must be a table, got {shown(table)}")
    return cls(**table_fields(cls, table, where, prefix=prefix, **options))


def _value(value: Any, hint: Any, spec: Field, where: str, key: str, rule: Rule | None) -> Any:
    given = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(given) == 1 and type(None) in typing.get_args(hint):  # "X | None": left out is None
        hint = given[0]
    if isinstance(hint, type) and is_dataclass(hint):
        return build(hint, value, where, prefix=key + ".", rule=rule)
    want = rule(value, hint, spec) if rule else None
    if want is None:
        try:
            return convert(value, hint)
        except TypeError:
            want = type_name(hint, article=True)
    raise BadInput(f"{where}: {key} must be {want}, got {shown(value)}")
