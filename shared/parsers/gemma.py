"""FunctionGemma: `<start_function_call>call:NAME{key:<escape>text<escape>,n:26,obj:{...}}<end_function_call>`
(strings between `<escape>` markers, other values bare, keys unquoted). A call comes whole when it ends."""

from __future__ import annotations

import json
from typing import Any

from shared.parsers.output import Call, Malformed, Scan, ToolFormat
from shared.parsers.typed import tool_params

BEGIN, END, ESC = "<start_function_call>", "<end_function_call>", "<escape>"


class FunctionGemma(ToolFormat):
    starts = (BEGIN,)

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.params = tool_params(tools)

    def scan(self, region: str, final: bool) -> Scan:
        end = _end(region)
        if end is None:
            if final:
                raise Malformed(len(region), cut=True)
            return Scan([], None)
        body = region[len(BEGIN) : end].strip()
        try:
            if not body.startswith("call:") or "{" not in body:
                raise ValueError("not a call")
            name, rest = body[5:].split("{", 1)
            args, pos = _object("{" + rest, 0)
            if ("{" + rest)[pos:].strip():
                raise ValueError("text after the arguments")
        except (ValueError, IndexError) as e:
            raise Malformed(end + len(END)) from e
        return Scan([Call(name.strip(), json.dumps(args, ensure_ascii=False))], end + len(END))


def _end(region: str) -> int | None:
    """Where the call's end marker is, outside `<escape>` strings."""
    pos, inside = len(BEGIN), False
    while True:
        esc, stop = region.find(ESC, pos), region.find(END, pos)
        if inside:
            if esc < 0:
                return None
            pos, inside = esc + len(ESC), False
        elif esc >= 0 and (stop < 0 or esc < stop):
            pos, inside = esc + len(ESC), True
        else:
            return stop if stop >= 0 else None


def _value(s: str, i: int) -> tuple[Any, int]:
    if s.startswith(ESC, i):
        j = s.index(ESC, i + len(ESC))
        return s[i + len(ESC) : j], j + len(ESC)
    if s[i] == "{":
        return _object(s, i)
    if s[i] == "[":
        out, i = [], i + 1
        while s[i] != "]":
            v, i = _value(s, i)
            out.append(v)
            i = _skip(s, i, "]")
        return out, i + 1
    j = i
    while j < len(s) and s[j] not in ",}]":
        j += 1
    text = s[i:j].strip()
    try:
        return json.loads(text), j
    except json.JSONDecodeError:
        return text, j


def _object(s: str, i: int) -> tuple[dict[str, Any], int]:
    out, i = {}, i + 1
    while s[i] != "}":
        colon = s.index(":", i)
        key = s[i:colon].strip()
        out[key], i = _value(s, colon + 1)
        i = _skip(s, i, "}")
    return out, i + 1


def _skip(s: str, i: int, close: str) -> int:
    while s[i] == " ":
        i += 1
    if s[i] == ",":
        return i + 1
    if s[i] != close:
        raise ValueError(f"expected , or {close}")
    return i
