"""The wire form of the protocol's payloads: camelCase keys, JSON-ready values, checked decoding.

`Wire` is the base of every payload in types.py: `to_wire()` gives a dict with camelCase keys
(`memory_gb` -> `memoryGb`); `from_wire(data)` checks each value against the field's annotation, fills
defaults for keys left out, and ignores keys it does not know (an older reader survives a newer writer).
The annotations it understands are the ones generate_ts.py can render: str, int, float, bool, Any,
list[T], dict[str, T], Literal[...], T | None and other payload dataclasses.

Must not import: nightlab.server, nightlab.trainer, pygls, lsprotocol, or anything outside the standard library.
"""

from __future__ import annotations

import types as _pytypes
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from functools import cache
from typing import Any, Literal, Union


class WireError(ValueError):
    """A payload that does not fit its type; the message names the payload and the key."""


def camel(name: str) -> str:
    """snake_case -> camelCase: `elapsed_s` -> `elapsedS`, `tok_per_s` -> `tokPerS`."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@cache
def hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a payload class (strings under `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, _pytypes.UnionType) and type(None) in typing.get_args(tp)


def encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {camel(f.name): encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def decode(tp: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as type `tp`; raises WireError naming `where` when it does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, _pytypes.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return decode(inner[0], value, where)
        raise WireError(f"{where}: unions other than `T | None` are not part of the protocol")
    if origin is Literal:
        if value not in args:
            raise WireError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise WireError(f"{where}: expected a list, got {type(value).__name__}")
        return [decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise WireError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: decode(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and is_dataclass(tp):
        return from_wire(tp, value, where)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }.get(tp)
    if ok is None:
        raise WireError(f"{where}: type {tp!r} is not part of the protocol")
    if not ok(value):
        raise WireError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return float(value) if tp is float else value


def from_wire(cls: type, data: Any, where: str = "") -> Any:
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise WireError(f"{where}: expected an object, got {type(data).__name__}")
    kwargs = {}
    for f in fields(cls):
        key = camel(f.name)
        if key in data:
            kwargs[f.name] = decode(hints(cls)[f.name], data[key], f"{where}.{key}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise WireError(f"{where}: missing {key!r}")
    return cls(**kwargs)


class Wire:
    """Base of every payload: camelCase wire form both ways."""

    def to_wire(self) -> dict[str, Any]:
        return encode(self)

    @classmethod
    def from_wire(cls, data: Any):
        return from_wire(cls, data)
