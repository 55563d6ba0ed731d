"""Plain data -> typed dataclasses, validated: every key known, every value of its field's type.

What :mod:`nuimcli.presets` builds presets with; the messages name the source file and the
dotted key, and an unknown key suggests the closest one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Union

from nuimcli.errors import UserError


def suggest(word: str, options: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or an empty string."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def type_hints(cls: Any) -> dict[str, Any]:
    """Field name -> resolved type of a dataclass (string annotations evaluated)."""
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> Any:
    """``X`` for ``Optional[X]``; any other type as it is."""
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list of {_type_name(arg)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def build_dataclass(tp: Any, value: Any, source: str, key: str = "") -> Any:
    """``value`` (plain dicts, lists, scalars from YAML or JSON) checked against the type ``tp``
    and built into it: dataclasses from mappings, ``list[X]``, ``Optional[X]``, int, float,
    bool and str. A mismatch is a :class:`UserError` ``"<source>: <dotted key>: ..."``; an
    unknown key names the closest field."""
    where = f"{source}: {key or '<top level>'}"
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return build_dataclass(non_none[0], value, source, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        kwargs = {}
        for k, v in value.items():
            sub = f"{key}.{k}" if key else str(k)
            if k not in hints:
                raise UserError(f"{source}: {sub}: unknown key{suggest(str(k), names)}")
            kwargs[k] = build_dataclass(hints[k], v, source, sub)
        try:
            return tp(**kwargs)
        except TypeError as e:  # a required field is missing
            raise UserError(f"{where}: {e}") from None
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return [build_dataclass(arg, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        number = _as_number(value)
        if number is None:
            raise UserError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return float(number)
    if tp is int:
        number = _as_number(value)
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            number = int(number)  # 1e3 or 1000.0 for an integer field: the integer it names
        if not isinstance(number, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return number
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported preset field type {tp!r} at {key}")  # a schema bug, not user input


def _as_number(value: Any) -> int | float | None:
    """``value`` as an int or float, or None when it is not a number (booleans are not).

    Strings count when Python's ``int()`` or ``float()`` reads them: YAML 1.1 (PyYAML) reads
    ``1e-4``, ``1E6`` or ``1.0e4`` as strings because its float pattern wants a dot and a signed
    exponent, yet they are how people write learning rates, in preset files and ``--set`` alike.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
    return None
