"""Tool-call syntaxes by SGLang's `--tool-call-parser` names (formats from each family's chat template)."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from typing import Any

from shared.parsers.output import Malformed, ToolCall, ToolFormat

_decoder = json.JSONDecoder()


def _args_text(value: Any) -> str:
    """Arguments as OpenAI sends them: a JSON object as text (compact, unicode kept)."""
    return json.dumps(value if value is not None else {}, ensure_ascii=False, separators=(", ", ": "))


def _call(obj: Any, length: int) -> ToolCall:
    """{"name": ..., "arguments" | "parameters": {...}} -> a call (Malformed otherwise)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise Malformed(length)
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            raise Malformed(length) from e
    if not isinstance(args, dict):
        raise Malformed(length)
    return ToolCall(obj["name"], _args_text(args))


def _json_at(text: str, pos: int) -> tuple[Any, int] | None:
    """The JSON value starting at `pos` (after whitespace) and where it ends; None if it is not complete yet
    (or not JSON: the caller decides when that is final)."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    try:
        return _decoder.raw_decode(text, pos)
    except json.JSONDecodeError:
        return None


def _typed(value: str, name: str, params: dict[str, Any]) -> Any:
    """An XML-style parameter value: JSON for non-string schema types, the raw text otherwise."""
    kind = (params.get(name) or {}).get("type")
    if kind in (None, "string") or (isinstance(kind, list) and "string" in kind):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


class _Enclosed(ToolFormat):
    """A region from `begin` to `end`; `body` parses what lies between (Malformed when it cannot)."""

    begin: str
    end: str

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.starts = (self.begin,)
        self.params = {t["function"]["name"]: (t["function"].get("parameters") or {}).get("properties") or {}
                       for t in tools if isinstance(t.get("function"), dict) and "name" in t["function"]}

    def take(self, region: str, final: bool) -> tuple[list[ToolCall], int] | None:
        i = region.find(self.end, len(self.begin))
        if i < 0:
            return None
        used = i + len(self.end)
        try:
            calls = self.body(region[len(self.begin) : i])
        except (ValueError, KeyError, TypeError) as e:
            raise Malformed(used) from e
        if not calls:
            raise Malformed(used)
        return calls, used

    def body(self, text: str) -> list[ToolCall]:
        raise NotImplementedError


class Hermes(ToolFormat):
    """Qwen 2.5 / Hermes: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one per call.
    The JSON is read as JSON, so a `</tool_call>` inside a string argument does not end the call."""

    begin, end = "<tool_call>", "</tool_call>"
    starts = (begin,)

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        pass

    def take(self, region: str, final: bool) -> tuple[list[ToolCall], int] | None:
        got = _json_at(region, len(self.begin))
        if got is None:  # not complete yet, or not JSON: only the end of the output tells which
            if final:
                raise Malformed(len(region))
            return None
        obj, pos = got
        tail = region[pos:]
        rest = tail.lstrip()
        if rest.startswith(self.end):
            used = pos + len(tail) - len(rest) + len(self.end)
            return [_call(obj, used)], used
        if not final and self.end.startswith(rest):
            return None
        raise Malformed(pos)


class Qwen3Coder(_Enclosed):
    """Qwen3-Coder: `<tool_call><function=NAME><parameter=K>V</parameter>...</function></tool_call>`."""

    begin, end = "<tool_call>", "</tool_call>"
    _fn = re.compile(r"^\s*<function=([^>\n]+)>(.*)</function>\s*$", re.S)
    _param = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.S)

    def body(self, text: str) -> list[ToolCall]:
        m = self._fn.match(text)
        if m is None:
            raise ValueError("not a function")
        name = m.group(1).strip()
        params = self.params.get(name, {})
        args = {k.strip(): _typed(v, k.strip(), params) for k, v in self._param.findall(m.group(2))}
        return [ToolCall(name, _args_text(args))]


class Glm45(_Enclosed):
    """GLM-4.5 / 4.7: `<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>...</tool_call>`."""

    begin, end = "<tool_call>", "</tool_call>"
    _pair = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)

    def body(self, text: str) -> list[ToolCall]:
        head = text.split("<arg_key>", 1)[0]
        name = head.strip()
        if not name or "<" in name:
            raise ValueError("no function name")
        params = self.params.get(name, {})
        args = {k.strip(): _typed(v, k.strip(), params) for k, v in self._pair.findall(text)}
        return [ToolCall(name, _args_text(args))]


def _ds(name: str) -> str:
    """A DeepSeek marker, e.g. "tool calls begin": fullwidth bars (U+FF5C) around it, U+2581 for spaces."""
    return "<\uff5c" + name.replace(" ", "\u2581") + "\uff5c>"


_DS_BEGIN, _DS_END = _ds("tool calls begin"), _ds("tool calls end")
_DS_CALL, _DS_SEP, _DS_CALL_END = (re.escape(_ds(n)) for n in ("tool call begin", "tool sep", "tool call end"))


class DeepSeekV3(_Enclosed):
    """DeepSeek V3: calls-begin, then per call: call-begin `function` sep `NAME\\n```json\\nARGS\\n```` call-end,
    then calls-end (the markers of `_ds`)."""

    begin, end = _DS_BEGIN, _DS_END
    _one = re.compile(_DS_CALL + r"(\w+)" + _DS_SEP + r"(.*?)\n```(?:json)?\n(.*?)\n```\s*" + _DS_CALL_END, re.S)

    def body(self, text: str) -> list[ToolCall]:
        return _all_calls(self._one, text, lambda m: (m.group(2), m.group(3)))


class DeepSeekV31(_Enclosed):
    """DeepSeek V3.1: calls-begin, then per call: call-begin `NAME` sep `ARGS` call-end, then calls-end."""

    begin, end = _DS_BEGIN, _DS_END
    _one = re.compile(_DS_CALL + r"(.*?)" + _DS_SEP + r"(.*?)" + _DS_CALL_END, re.S)

    def body(self, text: str) -> list[ToolCall]:
        return _all_calls(self._one, text, lambda m: (m.group(1), m.group(2)))


class KimiK2(_Enclosed):
    """Kimi K2: `<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>
    ARGS<|tool_call_end|>...<|tool_calls_section_end|>`."""

    begin, end = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
    _one = re.compile(r"<\|tool_call_begin\|>\s*(?:functions\.)?([^<:\s]+)(?::\d+)?\s*"
                      r"<\|tool_call_argument_begin\|>(.*?)<\|tool_call_end\|>", re.S)

    def body(self, text: str) -> list[ToolCall]:
        return _all_calls(self._one, text, lambda m: (m.group(1), m.group(2)))


def _all_calls(pattern: re.Pattern[str], text: str, pick: Callable[[re.Match[str]], tuple[str, str]]) -> list[ToolCall]:
    """Every call `pattern` finds, covering `text` but whitespace (ValueError otherwise)."""
    calls, pos = [], 0
    for m in pattern.finditer(text):
        if text[pos : m.start()].strip():
            raise ValueError("text between calls")
        name, args = pick(m)
        parsed = json.loads(args) if args.strip() else {}
        if not isinstance(parsed, dict):
            raise ValueError("arguments are not an object")
        calls.append(ToolCall(name.strip(), _args_text(parsed)))
        pos = m.end()
    if text[pos:].strip():
        raise ValueError("trailing text")
    return calls


class Llama3(ToolFormat):
    """Llama 3.x JSON calls: `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`,
    several separated by `;`."""

    starts = ("<|python_tag|>", '{"name"')

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        pass

    def take(self, region: str, final: bool) -> tuple[list[ToolCall], int] | None:
        pos = len("<|python_tag|>") if region.startswith("<|python_tag|>") else 0
        calls: list[ToolCall] = []
        while True:
            got = _json_at(region, pos)
            if got is None:
                if final:
                    raise Malformed(len(region))
                return None
            obj, end = got
            calls.append(_call(obj, len(region) if final else end))
            rest = region[end:]
            sep = rest.lstrip()
            if sep.startswith(";"):
                pos = end + (len(rest) - len(sep)) + 1
                continue
            if not sep and not final:
                return None  # a `;` and another call may follow
            return calls, end


class Mistral(ToolFormat):
    """Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`, or (v11+) `[TOOL_CALLS]NAME[ARGS]{...}`."""

    starts = ("[TOOL_CALLS]",)
    _named = re.compile(r"\s*([A-Za-z0-9_.\-]+)\[ARGS\]")

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        pass

    def take(self, region: str, final: bool) -> tuple[list[ToolCall], int] | None:
        pos = len(self.starts[0])
        m = self._named.match(region, pos)
        if m is not None:
            got = _json_at(region, m.end())
            if got is None:
                return self._incomplete(region, final)
            args, end = got
            return [_call({"name": m.group(1), "arguments": args}, end)], end
        got = _json_at(region, pos)
        if got is None:
            return self._incomplete(region, final)
        value, end = got
        items = value if isinstance(value, list) else [value]
        return [_call(item, end) for item in items], end

    @staticmethod
    def _incomplete(region: str, final: bool) -> None:
        if final:
            raise Malformed(len(region))
        return None


class Pythonic(ToolFormat):
    """Pythonic (Llama 4, etc.): `[get_weather(city="Paris"), f()]` at the start of the output, optionally
    wrapped in `<|python_start|>` ... `<|python_end|>`."""

    starts = ("<|python_start|>",)
    at_start_only = ("[",)

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        pass

    def take(self, region: str, final: bool) -> tuple[list[ToolCall], int] | None:
        lead = len(self.starts[0]) if region.startswith(self.starts[0]) else 0
        end = region.find("]", lead)
        while end >= 0:
            calls = _pythonic(region[lead : end + 1])
            if calls is not None:
                used = end + 1
                tail = region[used:]
                if lead and tail.lstrip().startswith("<|python_end|>"):
                    used += len(tail) - len(tail.lstrip()) + len("<|python_end|>")
                elif lead and not final and "<|python_end|>".startswith(tail.lstrip()):
                    return None
                return calls, used
            end = region.find("]", end + 1)
        if final:
            raise Malformed(len(region))
        return None


def _pythonic(text: str) -> list[ToolCall] | None:
    """`[f(a=1), g()]` -> calls; None when it is not (yet) a list of calls with literal keyword arguments."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None
    if not isinstance(tree.body, ast.List):
        return None
    calls = []
    for node in tree.body.elts:
        if not isinstance(node, ast.Call) or node.args:
            return None
        name = ast.unparse(node.func)
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
        except ValueError:
            return None
        calls.append(ToolCall(name, _args_text(args)))
    return calls or None


class GptOss(ToolFormat):
    """gpt-oss (harmony): `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>ARGS<|call|>`.
    The channel markers around the answer (`<|channel|>final<|message|>`, `<|return|>`, `<|end|>`) are removed
    by its reasoning parser."""

    starts = ("<|start|>assistant<|channel|>commentary to=", "<|channel|>commentary to=")
    _one = re.compile(r"(?:<\|start\|>assistant)?<\|channel\|>commentary to=(?:functions\.)?([^\s<]+)\s*"
                      r"(?:<\|constrain\|>\s*json\s*)?<\|message\|>(.*)", re.S)

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        pass

    def take(self, region: str, final: bool) -> tuple[list[ToolCall], int] | None:
        i = region.find("<|call|>")
        if i < 0 and not final:
            return None
        # `<|call|>` is an end-of-sequence token, which the frontend's detokenizer drops: the output's end ends it
        i, used = (i, i + len("<|call|>")) if i >= 0 else (len(region), len(region))
        m = self._one.match(region[:i])
        if m is None:
            raise Malformed(used)
        try:
            args = json.loads(m.group(2)) if m.group(2).strip() else {}
        except json.JSONDecodeError as e:
            raise Malformed(used) from e
        if not isinstance(args, dict):
            raise Malformed(used)
        return [ToolCall(m.group(1), _args_text(args))], used


TOOL_PARSERS: dict[str, type[ToolFormat]] = {
    "hermes": Hermes, "qwen25": Hermes, "qwen": Hermes,
    "qwen3_coder": Qwen3Coder,
    "llama3": Llama3,
    "mistral": Mistral,
    "pythonic": Pythonic, "llama4": Pythonic,
    "deepseekv3": DeepSeekV3, "deepseekv31": DeepSeekV31,
    "kimi_k2": KimiK2,
    "glm45": Glm45, "glm47": Glm45, "glm": Glm45,
    "gpt-oss": GptOss,
}


def tool_format(name: str, tools: list[dict[str, Any]]) -> ToolFormat:
    """The format named `name` (SGLang's --tool-call-parser), knowing the request's tools (XML formats type their
    values by the tools' schemas). KeyError for an unknown name."""
    if name not in TOOL_PARSERS:
        raise KeyError(f"unknown tool-call parser {name!r} (one of {', '.join(sorted(TOOL_PARSERS))})")
    return TOOL_PARSERS[name](tools)  # type: ignore[call-arg]
