"""Flag groups: each knob is declared once, as a field of a frozen Struct with its flag beside it.

    class RouterOptions(msgspec.Struct, frozen=True):
        temperature: float = 0.0

    ROUTER_FLAGS = FlagGroup("routing", RouterOptions,
                             flag("temperature", "--router-temperature", help="..."))
    ROUTER_FLAGS.add_to(parser)            # the flag, its type and its default from the field
    opts = ROUTER_FLAGS.build(ns)          # the frozen Struct

A bool field becomes a switch that flips its default (`--no-kv-events` for a
field defaulting to True). `skip` leaves fields out of a parser (they keep
their defaults); `defaults` overrides a default for one parser (the SGLang
default of an engine flag, an environment variable).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


@dataclass(frozen=True)
class Flag:
    field: str
    names: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)  # help, choices, metavar: passed to argparse


def flag(field_name: str, *names: str, **kwargs: Any) -> Flag:
    return Flag(field_name, names, kwargs)


class FlagGroup(Generic[S]):
    def __init__(self, title: str, struct: type[S], *flags: Flag) -> None:
        self.title = title
        self.struct = struct
        self.flags = flags
        self._fields = {f.name: f for f in msgspec.structs.fields(struct)}
        for f in flags:
            if f.field not in self._fields:
                raise TypeError(f"{struct.__name__} has no field {f.field!r}")

    def dest(self, field_name: str) -> str:
        return f"{self.struct.__name__}.{field_name}"

    def add_to(self, parser: argparse.ArgumentParser, skip: Iterable[str] = (),
               defaults: Mapping[str, Any] | None = None) -> None:
        group = parser.add_argument_group(self.title)
        for f in self.flags:
            if f.field in skip:
                continue
            info = self._fields[f.field]
            own = info.default_factory() if info.default is msgspec.NODEFAULT else info.default  # list fields
            default = (defaults or {}).get(f.field, own)
            kw: dict[str, Any] = {"dest": self.dest(f.field), "default": default, **f.kwargs}
            base = _scalar(info.type)
            if base is bool:
                kw["action"] = "store_false" if default else "store_true"
            elif base is not str and "action" not in kw and "type" not in kw:  # a flag may bring its own parser
                kw["type"] = base
            group.add_argument(*f.names, **kw)

    def build(self, ns: argparse.Namespace, **overrides: Any) -> S:
        """The Struct from the parsed flags (skipped fields keep their defaults); `overrides` win."""
        given = {f.field: getattr(ns, self.dest(f.field)) for f in self.flags if hasattr(ns, self.dest(f.field))}
        return self.struct(**{**given, **overrides})


def _scalar(tp: Any) -> Any:
    """`float` of `float | None`, `str` of `list[str]` (a flag with nargs); the type itself otherwise."""
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp
