"""Formats whose arguments are a JSON object the model writes: the raw object text streams as it arrives.

A region is: an opening (`open_re`), then calls, each a header (`head_re`, group `name`, ending where the
arguments begin), the arguments, a trailer (`tail_re`); calls are separated by `sep_re` (None: one call a
region) and the region ends with `close_re` (None: right after the calls). Patterns are matched with the
`regex` module's partial matching, so a pattern cut short by the end of the text waits for more.
"""

from __future__ import annotations

import json
from typing import Any

import regex

from shared.parsers.jsonscan import JsonSpan
from shared.parsers.output import Call, Malformed, Scan, ToolFormat
from shared.parsers.scan import find_first

Pattern = regex.Pattern


def rx(pattern: str) -> Pattern:
    return regex.compile(pattern, regex.S)


class JsonCalls(ToolFormat):
    open_re: Pattern | None = None
    head_re: Pattern
    tail_re: Pattern | None = None
    loose_tail_re: Pattern | None = None  # what ends a call whose trailer is missing
    end_marker = ""  # a call whose trailer does not match ends at this marker
    sep_re: Pattern | None = None
    close_re: Pattern | None = None

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.tools = tools
        self.reset()

    def reset(self) -> None:
        self.calls: list[Call] = []
        self.phase = "open"
        self.pos = 0
        self.end_if_no_head = 0  # where the region ends when a separator is not followed by a call
        self.span: JsonSpan | None = None
        self.quoted = False  # the arguments are a JSON string holding the object

    def scan(self, region: str, final: bool) -> Scan:
        while True:
            step = getattr(self, "_" + self.phase)(region, final)
            if step is not None:
                return step

    def _wait(self, region: str, final: bool, cut: bool = True) -> Scan:
        """More text is needed; at the end of the output a region with calls ends there (the unfinished markup
        is dropped when `cut`), one without is plain text."""
        if not final:
            return Scan(self.calls, None)
        if not self.calls:
            raise Malformed(len(region), cut=True)
        return Scan(self.calls, len(region) if cut else self.pos)

    def _match(self, pattern: Pattern, region: str) -> Any:
        return pattern.match(region, self.pos, partial=True)

    def _open(self, region: str, final: bool) -> Scan | None:
        if self.open_re is not None:
            m = self._match(self.open_re, region)
            if m is None:
                raise Malformed(self._bad_length(region))
            if m.partial:
                return self._wait(region, final)
            self.pos = m.end()
        self.phase = "head"
        self.end_if_no_head = self.pos
        return None

    def _head(self, region: str, final: bool) -> Scan | None:
        m = self._match(self.head_re, region)
        if m is None or (not m.partial and m.end() < len(region) and region[m.end()] not in '{"'):
            if not self.calls:
                raise Malformed(self._bad_length(region))
            return Scan(self.calls, self.end_if_no_head)
        if m.partial or m.end() >= len(region):
            return self._wait(region, final)
        self.on_head(m)
        self.calls.append(Call(m.group("name").strip(), ""))
        self.quoted = region[m.end()] == '"'
        self.span = JsonSpan(m.end())
        self.phase, self.pos = "args", m.end()
        return None

    def _bad_length(self, region: str) -> int:
        """A region that is not a call: its start marker becomes text (scanning goes on after it)."""
        hit = next((m for m in self.starts if region.startswith(m)), "")
        return max(1, len(hit))

    def _args(self, region: str, final: bool) -> Scan | None:
        span = self.span
        assert span is not None
        end = span.advance(region)
        call = self.calls[-1]
        if end is None and not span.bad:
            if not self.quoted:
                call.arguments = region[span.start :]
            if final:
                call.arguments = (region[span.start :] + span.closing(region)) if not self.quoted else "{}"
                return Scan(self.calls, len(region))
            return Scan(self.calls, None)
        end = end if end is not None else span.pos
        raw = region[span.start : end]
        if self.quoted:  # arguments written as a JSON string: its text is the object
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raw = "{}"
        call.arguments = raw if isinstance(raw, str) else "{}"
        self.phase, self.pos = "tail", end
        return None

    def _tail(self, region: str, final: bool) -> Scan | None:
        if self.tail_re is not None:
            m = self._match(self.tail_re, region)
            if m is None and self.end_marker:  # more keys after the arguments: the call ends at its marker
                i = region.find(self.end_marker, self.pos)
                again = find_first(region, self.starts, self.pos)  # another call begins first: no end here
                if i >= 0 and (again is None or again[0] > i):
                    return Scan(self.calls, i + len(self.end_marker))
                if i < 0 and again is None and not final:
                    return Scan(self.calls, None)
            if m is None and self.loose_tail_re is not None:  # the call's own end, then no marker: skip it
                loose = self._match(self.loose_tail_re, region)
                if loose is not None and not loose.partial:
                    return Scan(self.calls, loose.end())
            if m is None:
                return Scan(self.calls, self.pos)
            if m.partial:
                return self._wait(region, final, cut=True)
            self.pos = m.end()
        self.phase = "after"
        return None

    def _after(self, region: str, final: bool) -> Scan | None:
        waiting = False
        if self.close_re is not None:
            m = self._match(self.close_re, region)
            if m is not None and not m.partial:
                return Scan(self.calls, m.end())
            if m is not None and not final:
                return Scan(self.calls, None)
            waiting = m is not None
        if self.sep_re is not None:
            m = self._match(self.sep_re, region)
            if m is not None and not m.partial and m.end() < len(region):
                self.end_if_no_head = self.pos
                self.pos, self.phase = m.end(), "head"
                return None
            waiting = waiting or m is not None
        if waiting and not final:
            return Scan(self.calls, None)
        if waiting and final and self.close_re is not None:
            m = self._match(self.close_re, region)
            if m is not None:  # a closing marker cut short by the end: dropped
                return Scan(self.calls, len(region))
        return Scan(self.calls, self.pos)

    def on_head(self, m: Any) -> None:
        """A call header matched (formats whose trailer depends on the header's form override this)."""


class HermesJson(JsonCalls):
    """Qwen 2.5 / Qwen3 / Hermes: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`. An object in
    another key order (Hermes 2 Pro's template writes `{"arguments": {...}, "name": ...}`) comes whole, when
    it closes (the name must come first in a stream)."""

    starts = ("<tool_call>",)
    open_re = rx(r"<tool_call>\s*")
    head_re = rx(r'\{\s*"name"\s*:\s*"(?P<name>[^"\\]+)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')
    tail_re = rx(r"\s*\}\s*</tool_call>")
    loose_tail_re = rx(r"\s*\}")
    end_marker = "</tool_call>"
    _end_only = rx(r"\s*</tool_call>")
    _inner_sep = rx(r'\s*\}\s*,?\s*(?=\{\s*"name")')  # several calls in one `<tool_call>` (SGLang's tests)

    def reset(self) -> None:
        super().reset()
        self.tail_re = type(self).tail_re
        self.whole: JsonSpan | None = None

    def _tail(self, region: str, final: bool) -> Scan | None:
        if self.tail_re is type(self).tail_re:
            m = self._match(self._inner_sep, region)
            if m is not None and not m.partial:
                self.pos, self.phase = m.end(), "head"
                return None
        return super()._tail(region, final)

    def _head(self, region: str, final: bool) -> Scan | None:
        if self.calls or (self.whole is None and self._match(self.head_re, region) is not None):
            return super()._head(region, final)
        if self.pos >= len(region):
            return self._wait(region, final)
        if region[self.pos] != "{":
            raise Malformed(len(self.starts[0]))
        self.whole = self.whole or JsonSpan(self.pos)
        end = self.whole.advance(region)
        if end is None:
            if self.whole.bad:
                raise Malformed(len(self.starts[0]))
            return self._wait(region, final)
        try:
            obj = json.loads(region[self.pos : end])
            args = obj.get("arguments", obj.get("parameters", {}))
            args = json.loads(args) if isinstance(args, str) else args
        except (json.JSONDecodeError, AttributeError) as e:
            raise Malformed(len(self.starts[0])) from e
        if not isinstance(obj.get("name"), str) or not isinstance(args, dict):
            raise Malformed(len(self.starts[0]))
        self.calls.append(Call(obj["name"], json.dumps(args, ensure_ascii=False)))
        self.tail_re, self.phase, self.pos = self._end_only, "tail", end
        return None


class Llama3(JsonCalls):
    """Llama 3.x: `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`, several separated by
    `;`."""

    starts = ("<|python_tag|>", '{"name"', '{"type": "function"')
    open_re = rx(r"(?:<\|python_tag\|>)?\s*")
    head_re = rx(r'\{\s*(?:"type"\s*:\s*"function"\s*,\s*)?"name"\s*:\s*"(?P<name>[^"\\]+)"\s*,\s*'
                 r'"(?:parameters|arguments)"\s*:\s*')
    tail_re = rx(r"\s*\}")
    sep_re = rx(r"\s*;\s*")


class Mistral(JsonCalls):
    """Mistral: `[TOOL_CALLS]NAME[ARGS]{...}`, `[TOOL_CALLS]NAME[CALL_ID]ID[ARGS]{...}` (v11+), or
    `[TOOL_CALLS][{"name": ..., "arguments": {...}[, "id": ...]}, ...]` (v0.3)."""

    starts = ("[TOOL_CALLS]",)
    open_re = rx(r"\[TOOL_CALLS\]\s*(?:\[\s*(?=\{)|(?=[^\s\[]))")
    # v11+: NAME[ARGS]{...}, or NAME{...} where the detokenizer skipped [ARGS] (a special token)
    head_re = rx(r'(?:(?P<name>[A-Za-z0-9_.\-]+)(?:\[CALL_ID\][A-Za-z0-9_\-]*)?(?:\[ARGS\]\s*|\s*(?=\{))'
                 r'|\{\s*"name"\s*:\s*"(?P<name>[^"\\]+)"\s*,\s*"(?:arguments|parameters)"\s*:\s*)')
    # an object may carry the call's id after its arguments (vLLM's parallel Mistral template writes it)
    _obj_tail = rx(r'\s*(?:,\s*"id"\s*:\s*"[^"\\]*"\s*)?\}')
    _list_sep, _list_close = rx(r"\s*,\s*"), rx(r"\s*\]")

    def reset(self) -> None:
        super().reset()
        self.tail_re = self.sep_re = self.close_re = None
        self.whole: JsonSpan | None = None

    def _head(self, region: str, final: bool) -> Scan | None:
        """A list object in another key order (`{"arguments": {...}, "name": ...}`) comes whole, when it closes."""
        if self._match(self.head_re, region) is not None or region[self.pos : self.pos + 1] != "{":
            return super()._head(region, final)
        self.whole = self.whole or JsonSpan(self.pos)
        end = self.whole.advance(region)
        if end is None and not self.whole.bad:
            return self._wait(region, final)
        try:
            obj = json.loads(region[self.pos : end]) if end is not None else None
        except json.JSONDecodeError:
            obj = None
        args = obj.get("arguments", obj.get("parameters")) if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(args, dict):
            return super()._head(region, final)
        self.calls.append(Call(obj["name"], json.dumps(args, ensure_ascii=False)))
        self.tail_re, self.sep_re, self.close_re = None, self._list_sep, self._list_close
        self.phase, self.pos, self.whole = "tail", end, None  # type: ignore[assignment]
        return None

    def on_head(self, m: Any) -> None:
        if m.group(0).lstrip().startswith("{"):
            self.tail_re, self.sep_re = self._obj_tail, self._list_sep
            self.close_re = self._list_close
        else:
            self.tail_re = self.sep_re = self.close_re = None


def ds(name: str) -> str:
    """A DeepSeek marker, e.g. "tool calls begin": fullwidth bars (U+FF5C) around it, U+2581 for spaces."""
    return "<\uff5c" + name.replace(" ", "\u2581") + "\uff5c>"


class DeepSeek(JsonCalls):
    """DeepSeek V3 (`function<sep>NAME\\n```json\\nARGS\\n```) and V3.1 (`NAME<sep>ARGS`) between call-begin and
    call-end, inside calls-begin ... calls-end (the markers of `ds`)."""

    starts = (ds("tool calls begin"), ds("tool call begin"))
    open_re = rx(f"(?:{regex.escape(ds('tool calls begin'))})?\\s*")
    _sep = regex.escape(ds("tool sep"))
    head_re = rx(f"\\s*{regex.escape(ds('tool call begin'))}\\s*"
                 f"(?:function\\s*{_sep}(?P<name>[^\\n<`]+?)\\s*```[A-Za-z]*\\s*"
                 f"|(?!function\\s*{_sep})(?P<name>[^<]+?){_sep}\\s*)")
    tail_re = rx(f"\\s*(?:```\\s*)?{regex.escape(ds('tool call end'))}")
    sep_re = rx("")
    close_re = rx(f"\\s*{regex.escape(ds('tool calls end'))}")


class KimiK2(JsonCalls):
    """Kimi K2: `<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>
    ARGS<|tool_call_end|>...<|tool_calls_section_end|>` (also the singular `tool_call_section` markers, and
    calls without a section)."""

    starts = ("<|tool_calls_section_begin|>", "<|tool_call_section_begin|>", "<|tool_call_begin|>")
    open_re = rx(r"(?:<\|tool_calls?_section_begin\|>)?\s*")
    head_re = rx(r"\s*<\|tool_call_begin\|>\s*(?:functions\.)?(?P<name>[^\s<]+?)(?::\d+)?\s*"
                 r"<\|(?:tool_call_argument_begin|tool_arguments_begin)\|>\s*")
    tail_re = rx(r"\s*<\|tool_call_end\|>")
    sep_re = rx("")
    close_re = rx(r"\s*<\|tool_calls?_section_end\|>")
