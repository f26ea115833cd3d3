"""Formats whose arguments are XML-style parameters: the arguments JSON is built and streamed key by key, each
value typed by the tool's schema.

A value ends at its closing tag only where what follows the tag continues the call (another parameter, the
call's or the region's end): a closing tag inside a string value does not end it. A value whose closing tag
is missing ends where the next parameter begins.
"""

from __future__ import annotations

import re
from typing import Any

from shared.parsers.json_calls import Pattern, rx
from shared.parsers.output import Call, Malformed, Scan, ToolFormat
from shared.parsers.scan import partial_suffix
from shared.parsers.typed import arg_item, tool_params, typed_value

_INDENTED = re.compile(r"\n([ \t]+)(.*)\n\1", re.S)  # a value between indented tags


class XmlCalls(ToolFormat):
    open_re: Pattern | None = None
    call_re: Pattern  # group `name`
    head_needs_lt = False  # the call header is complete only when a `<` follows it
    param_re: Pattern  # group `key` (and `str`: "true" keeps the text, "false" parses it)
    param_start: str  # the literal a parameter header begins with
    param_close: str
    call_close_re: Pattern
    call_close: str
    close_re: Pattern | None = None
    closes: tuple[str, ...] = ()  # the region's closing literals
    call_start: str = ""  # another call in the same region begins with this ("" : one call a region)
    strip_newlines = False  # the template writes a newline after the parameter tag and before its closing tag

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.params = tool_params(tools)
        self.reset()

    def reset(self) -> None:
        self.calls: list[Call] = []
        self.items = 0
        self.phase, self.pos = "open", 0
        self.key, self.as_text, self.vstart, self.vresume = "", None, 0, 0
        self.opened = False
        self.settled = False  # waiting inside a value: only a `<` can change anything

    def quiet(self, text: str) -> bool:
        """Whether appending `text` to the region cannot change what `scan` says (a fast path)."""
        return self.phase == "value" and self.settled and "<" not in text

    def scan(self, region: str, final: bool) -> Scan:
        while True:
            step = getattr(self, "_" + self.phase)(region, final)
            if step is not None:
                return step

    def _wait(self, region: str, final: bool) -> Scan:
        if not final:
            return Scan(self.calls, None)
        if not self.calls:
            raise Malformed(len(region), cut=True)
        if self.phase in ("params", "value"):
            self._end_call()
        return Scan(self.calls, len(region))

    def _open(self, region: str, final: bool) -> Scan | None:
        if self.open_re is not None:
            m = self.open_re.match(region, 0, partial=True)
            if m is None:
                raise Malformed(1)
            if m.partial:
                return self._wait(region, final)
            self.pos, self.opened = m.end(), bool(m.group(0).strip())
        self.phase = "call"
        return None

    def _call(self, region: str, final: bool) -> Scan | None:
        m = self.call_re.match(region, self.pos, partial=True)
        touching = m is not None and m.end() >= len(region)
        if m is None or (self.head_needs_lt and not touching and region[m.end()] != "<"):
            if not self.calls:
                raise Malformed(len(next((s for s in self.starts if region.startswith(s)), "x")))
            return Scan(self.calls, self.pos)
        if m.partial or (self.head_needs_lt and touching):
            return self._wait(region, final)
        self.calls.append(Call(m.group("name").strip(), "{"))
        self.items, self.pos, self.phase = 0, m.end(), "params"
        return None

    def _end_call(self) -> None:
        self.calls[-1].arguments += "}"

    def _params(self, region: str, final: bool) -> Scan | None:
        m = self.param_re.match(region, self.pos, partial=True)
        if m is not None and not m.partial:
            self.key, self.vstart, self.vresume = m.group("key").strip(), m.end(), 0
            self.as_text = m.groupdict().get("str")
            self.phase = "value"
            return None
        c = self.call_close_re.match(region, self.pos, partial=True)
        if c is not None and not c.partial:
            self._end_call()
            self.pos, self.phase = c.end(), "after"
            return None
        if m is not None or c is not None:
            return self._wait(region, final)
        nxt = [i for i in (region.find(self.param_start, self.pos), region.find(self.call_close, self.pos)) if i >= 0]
        if nxt:  # text that is no parameter: skipped
            self.pos = min(nxt)
            return None
        return self._wait(region, final)

    def _value(self, region: str, final: bool) -> Scan | None:
        p = max(self.vstart, self.vresume)  # literals before it were read as part of the value
        while True:
            hits = [(i, kind) for kind, lit in (("close", self.param_close), ("param", self.param_start),
                                                ("call", self.call_close))
                    if (i := region.find(lit, p)) >= 0]
            if not hits:
                break
            i, kind = min(hits)
            verdict, after = self._ends_here(region, i, kind, final)
            if verdict is None:
                self.settled = False
                return self._wait_value(region, final)
            if verdict:
                self._add_item(region[self.vstart : i])
                self.pos, self.phase = after, "params"
                return None
            p = self.vresume = i + 1
        self.settled = not partial_suffix(region[-40:], (self.param_close, self.param_start, self.call_close))
        return self._wait_value(region, final)

    def _wait_value(self, region: str, final: bool) -> Scan:
        if final:
            text = region[self.vstart :]
            self._add_item(text[: len(text) - partial_suffix(text, [self.param_close])])
        return self._wait(region, final)

    def _ends_here(self, region: str, i: int, kind: str, final: bool) -> tuple[bool | None, int]:
        """Whether the value ends at `i` (None: cannot tell yet) and where scanning goes on."""
        if kind == "param":
            m = self.param_re.match(region, i, partial=True)
            return (None if m is not None and m.partial else m is not None), i
        lit = self.param_close if kind == "close" else self.call_close
        after = i + len(lit)
        rest = region[after:].lstrip()
        follow = (self.param_start, self.call_close, *self.closes, *((self.call_start,) if self.call_start else ()))
        if kind == "call":
            follow = (*self.closes, *((self.call_start,) if self.call_start else ()))
        if not rest:
            return (True if final else None), (after if kind == "close" else i)
        if any(rest.startswith(f) for f in follow):
            return True, (after if kind == "close" else i)
        if any(f.startswith(rest) for f in follow):
            return (True if final else None), (after if kind == "close" else i)
        return False, 0

    def _add_item(self, text: str) -> None:
        if self.strip_newlines:
            indented = _INDENTED.fullmatch(text)
            if indented:  # the whole call indented (tags and value): the value without the indentation
                ind = indented.group(1)
                text = "\n".join(line.removeprefix(ind) for line in (ind + indented.group(2)).split("\n"))
            else:
                text = text.removeprefix("\n").removesuffix("\n")
        schema = self.params.get(self.calls[-1].name, {}).get(self.key)
        value = text if self.as_text == "true" else typed_value(text, schema if self.as_text != "false" else {
            "type": ["object", "array", "number", "boolean", "null"]})
        self.calls[-1].arguments += (", " if self.items else "") + arg_item(self.key, value)
        self.items += 1

    def _after(self, region: str, final: bool) -> Scan | None:
        waiting = False
        if self.close_re is not None:
            m = self.close_re.match(region, self.pos, partial=True)
            if m is not None and not m.partial:
                return Scan(self.calls, m.end())
            waiting = m is not None
        if self.call_start:
            m = self.call_re.match(region, self.pos, partial=True)
            if m is not None and not m.partial and m.end() < len(region):
                self.phase = "call"
                return None
            waiting = waiting or m is not None
        if waiting and not final:
            return Scan(self.calls, None)
        return Scan(self.calls, len(region) if waiting else self.pos)


class QwenXml(XmlCalls):
    """Qwen3-Coder / Qwen3.5: `<tool_call>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n</function>\\n
    </tool_call>`, also without the `<tool_call>` opener."""

    starts = ("<tool_call>", "<function=")
    open_re = rx(r"(?:<tool_call>\s*)?")
    call_re = rx(r"\s*<function=(?P<name>[^>\n]+)>")
    param_re = rx(r"\s*<parameter=(?P<key>[^>\n]+)>")
    param_start, param_close = "<parameter=", "</parameter>"
    call_close_re, call_close = rx(r"\s*</function>"), "</function>"
    close_re, closes = rx(r"\s*</tool_call>"), ("</tool_call>",)
    call_start = "<function="
    strip_newlines = True


class Glm(XmlCalls):
    """GLM-4.5 / 4.6 / 4.7 / 5: `<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>...</tool_call>`
    (4.7 writes no newlines)."""

    starts = ("<tool_call>",)
    open_re = rx(r"<tool_call>")
    call_re = rx(r"\s*(?P<name>[^\s<>]+)\s*")
    head_needs_lt = True
    param_re = rx(r"\s*<arg_key>(?P<key>[^<]*)</arg_key>\s*<arg_value>")
    param_start, param_close = "<arg_key>", "</arg_value>"
    call_close_re, call_close = rx(r"\s*</tool_call>"), "</tool_call>"
    closes = ("<tool_call>",)


def _dsml(bar: str) -> dict[str, Any]:
    """DSML's markup with `bar` around DSML (the fullwidth bar the template writes, or an ASCII one)."""
    d, e = f"{bar}DSML{bar}", re.escape(f"{bar}DSML{bar}")
    return {"starts": (f"<{d}function_calls>", f"<{d}tool_calls>"),
            "open_re": rx(f"<{e}(?:function_calls|tool_calls)>"),
            "call_re": rx(f'\\s*<{e}invoke\\s+name="(?P<name>[^"]+)"\\s*>'),
            "param_re": rx(f'\\s*<{e}parameter\\s+name="(?P<key>[^"]+)"(?:\\s+string="(?P<str>true|false)")?\\s*>'),
            "param_start": f"<{d}parameter", "param_close": f"</{d}parameter>",
            "call_close_re": rx(f"\\s*</{e}invoke>"), "call_close": f"</{d}invoke>",
            "close_re": rx(f"\\s*</{e}(?:function_calls|tool_calls)>"),
            "closes": (f"</{d}function_calls>", f"</{d}tool_calls>"), "call_start": f"<{d}invoke"}


class _Dsml(XmlCalls):
    bar = "\uff5c"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for key, value in _dsml(cls.bar).items():
            setattr(cls, key, value)


class DeepSeekDsml(_Dsml):
    """DeepSeek V3.2 and later (DSML): `<|DSML|function_calls>` (or `tool_calls`) `<|DSML|invoke name="NAME">
    <|DSML|parameter name="K" string="true|false">V</|DSML|parameter></|DSML|invoke>` ... (fullwidth bars)."""

    bar = "\uff5c"


class DeepSeekDsmlAscii(_Dsml):
    """DSML written with ASCII bars (`<|DSML|invoke ...>`), as models sometimes do (seen in DeepSeek V3.2
    outputs quoted in public issues)."""

    bar = "|"


class MiniMax(XmlCalls):
    """MiniMax-M2: `<minimax:tool_call>\\n<invoke name="NAME">\\n<parameter name="K">V</parameter>\\n</invoke>\\n
    </minimax:tool_call>`."""

    starts = ("<minimax:tool_call>",)
    open_re = rx(r"<minimax:tool_call>")
    call_re = rx(r'\s*<invoke\s+name="?(?P<name>[^">]+)"?\s*>')
    param_re = rx(r'\s*<parameter\s+name="?(?P<key>[^">]+)"?\s*>')
    param_start, param_close = "<parameter name=", "</parameter>"
    call_close_re, call_close = rx(r"\s*</invoke>"), "</invoke>"
    close_re, closes = rx(r"\s*</minimax:tool_call>"), ("</minimax:tool_call>",)
    call_start = "<invoke"
