"""Reading a command line without knowing its parser: flags, their values, and junk.

SGLang's flags are all long (`--name value`, `--name=value`, `--switch`); a
token that starts with `--` is a flag and the tokens after it, up to the next
flag, are its values. That is enough to find junk (a value before any flag),
to read the few settings shoal needs, and to spot one setting given twice
under two spellings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FLAG = re.compile(r"^--[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHORT = re.compile(r"^-[A-Za-z]")


class SglangArgsError(ValueError):
    """SGLang flags that cannot be used; the message names the flags."""


@dataclass(frozen=True)
class Occurrence:
    flag: str  # as written, without any `=value`
    values: tuple[str, ...]
    index: int  # position of the flag in argv


def is_flag(token: str) -> bool:
    return token.startswith("--") or bool(_SHORT.match(token))


def occurrences(argv: list[str] | tuple[str, ...]) -> list[Occurrence]:
    """Every flag in argv with the values that follow it; raises on junk."""
    out: list[Occurrence] = []
    flag: str | None = None
    values: list[str] = []
    start = 0
    for i, token in enumerate(argv):
        if not is_flag(token):
            if flag is None:
                raise SglangArgsError(f"value {token!r} has no flag before it (SGLang flags look like --name value)")
            values.append(token)
            continue
        if flag is not None:
            out.append(Occurrence(flag, tuple(values), start))
        flag, inline = _split_inline(token)
        values = [inline] if inline is not None else []
        start = i
    if flag is not None:
        out.append(Occurrence(flag, tuple(values), start))
    return out


def _split_inline(token: str) -> tuple[str, str | None]:
    name, eq, value = token.partition("=")
    if _SHORT.match(name) and not name.startswith("--"):
        raise SglangArgsError(f"{token!r}: SGLang has only long flags (--name)")
    if not _FLAG.match(name):
        raise SglangArgsError(f"{token!r} is not a flag name")
    return name, (value if eq else None)


def last_value(argv: list[str] | tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...] | None:
    """The values of the last occurrence of any of `names` (None when absent)."""
    found = None
    for occ in occurrences(argv):
        if occ.flag in names:
            found = occ.values
    return found


def has_flag(argv: list[str] | tuple[str, ...], names: tuple[str, ...]) -> bool:
    return last_value(argv, names) is not None


def conflicts(found: list[tuple[str, str, tuple[str, ...]]]) -> list[str]:
    """Settings given under two spellings with different values.

    `found` holds (setting, flag as written, values) in command-line order. The
    same flag written twice is an override (a YAML file's flags come first,
    the command line's after them, and the last wins); two spellings of one
    setting that disagree are a mistake.
    """
    seen: dict[str, tuple[str, tuple[str, ...]]] = {}
    out: list[str] = []
    for setting, flag, values in found:
        prev = seen.get(setting)
        if prev is not None and prev[0] != flag and prev[1] != values:
            out.append(f"{prev[0]} {' '.join(prev[1])!s} vs {flag} {' '.join(values)!s}".replace("  ", " ").strip())
        seen[setting] = (flag, values)
    return out
