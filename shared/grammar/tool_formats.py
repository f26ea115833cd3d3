"""Forced-call structural tags for the formats xgrammar has no builtin for in every version shoal runs
(0.2.1 on the GPU bundle, newer here): DeepSeek V3.2 DSML, MiniMax-M2, gpt-oss harmony, Llama 4 pythonic and
FunctionGemma. Each produces exactly what shared/parsers reads back as a call whose arguments validate.

Only plain structural-tag formats that both versions have are used (sequence, or, optional, star, const_string,
tag, tags_with_separator, json_schema, regex): not json_schema's XML `style`s, which let whitespace around a
value that the parsers rightly keep in a string. Parameters come in the schema's order, required ones always.
The tools come unfixed (string lengths stay lengths, for raw text); JSON values get shared.grammar.schema's fix."""

from __future__ import annotations

import ast
import functools
import json
from typing import Any

from shared.grammar.schema import fix_schema

Fmt = dict[str, Any]
_DSML = "\uff5cDSML\uff5c"


def const(value: str) -> Fmt:
    return {"type": "const_string", "value": value}


def seq(*parts: Fmt | None) -> Fmt | None:
    """A sequence of the parts that are not empty (None); None when all are."""
    items = [p for p in parts if p is not None]
    return None if not items else items[0] if len(items) == 1 else {"type": "sequence", "elements": items}


def either(*parts: Fmt | None) -> Fmt | None:
    """One of the parts; None (the empty string) among them makes the choice optional."""
    items = [p for p in parts if p is not None]
    if len(items) < len(parts):
        if not items:
            return None
        items = [{"type": "or", "elements": items} if len(items) > 1 else items[0]]
        return {"type": "optional", "content": items[0]} if _has_optional() else _opt_fallback(items[0])
    return items[0] if len(items) == 1 else {"type": "or", "elements": items}


def _opt_fallback(part: Fmt) -> Fmt:  # pragma: no cover - every xgrammar shoal supports has `optional`
    raise ValueError("this xgrammar cannot express optional parameters")


@functools.cache
def _has_optional() -> bool:
    try:
        from xgrammar.structural_tag import OptionalFormat  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    return True



def schema(s: dict[str, Any]) -> Fmt:
    """JSON valid under `s`, with at most one whitespace character between tokens; where xgrammar's
    json_schema format cannot bound whitespace (0.2.1: a greedy model then writes newlines forever), the
    schema's compact-JSON grammar instead."""
    if _bounds_whitespace():
        return {"type": "json_schema", "json_schema": s, "max_whitespace_cnt": 1}
    import xgrammar as xgr

    return {"type": "grammar", "grammar": str(xgr.Grammar.from_json_schema(json.dumps(s), any_whitespace=False,
                                                                            strict_mode=True))}


@functools.cache
def _bounds_whitespace() -> bool:
    try:
        from xgrammar.structural_tag import JSONSchemaFormat
    except ImportError:  # pragma: no cover
        return False
    return "max_whitespace_cnt" in JSONSchemaFormat.model_fields


def calls(tags: list[Fmt], separator: str, parallel: bool) -> Fmt:
    return {"type": "tags_with_separator", "tags": tags, "separator": separator, "at_least_one": True,
            "stop_after_first": not parallel}


def dsml(tools: list[dict[str, Any]], parallel: bool) -> Fmt:
    """`<|DSML|function_calls>\n<|DSML|invoke name="f">\n<|DSML|parameter name="k" string="true">v
    </|DSML|parameter>\n</|DSML|invoke>\n</|DSML|function_calls>` with fullwidth bars (the V3.2 chat
    template's rendering: strings raw, other values JSON with string="false")."""

    def param(k: str, v: dict[str, Any]) -> Fmt:
        raw = _is_text(v)
        return seq(const(f'<{_DSML}parameter name="{k}" string="{"true" if raw else "false"}">'),
                   _text(v) if raw else schema(fix_schema(v)), const(f"</{_DSML}parameter>\n"))  # type: ignore

    tags = [_tag(f'<{_DSML}invoke name="{t["function"]["name"]}">\n',
                 _keywords(t["function"]["parameters"], param, ""), f"</{_DSML}invoke>\n") for t in tools]
    return seq(const(f"<{_DSML}function_calls>\n"), calls(tags, "", parallel),
               const(f"</{_DSML}function_calls>"))  # type: ignore[return-value]


def minimax(tools: list[dict[str, Any]], parallel: bool) -> Fmt:
    """`<minimax:tool_call>\n<invoke name="f">\n<parameter name="k">v</parameter>\n</invoke>\n
    </minimax:tool_call>` (strings raw, other values JSON)."""

    def param(k: str, v: dict[str, Any]) -> Fmt:
        value = _text(v) if _is_text(v) else schema(fix_schema(v))
        return seq(const(f'<parameter name="{k}">'), value, const("</parameter>\n"))  # type: ignore[return-value]

    tags = [_tag(f'<invoke name="{t["function"]["name"]}">\n', _keywords(t["function"]["parameters"], param, ""),
                 "</invoke>\n") for t in tools]
    return seq(const("<minimax:tool_call>\n"), calls(tags, "", parallel),
               const("</minimax:tool_call>"))  # type: ignore[return-value]


def _tag(begin: str, content: Fmt | None, end: str) -> Fmt:
    """A tag; with no content (a call without parameters), its end as the content (xgrammar has no empty format)."""
    if content is None:
        return {"type": "tag", "begin": begin, "content": const(end), "end": ""}
    return {"type": "tag", "begin": begin, "content": content, "end": end}


def _is_text(s: dict[str, Any]) -> bool:
    """The value is written raw (a string schema) rather than as JSON."""
    values = s.get("enum", [s["const"]] if "const" in s else None)
    if values is not None:
        return all(isinstance(v, str) for v in values)
    return s.get("type") == "string"


# a raw string's characters: printable, no `<` (no closing tag inside), named by positive ranges (xgrammar 0.2.1
# reads a negated class byte by byte, and its strings could then cut a UTF-8 character)
_RAW_CHAR = "[ -;=-~\u00a0-\ud7ff\ue000-\uffff\U00010000-\U0010ffff]"


def _text(s: dict[str, Any]) -> Fmt:
    """A string value written raw: enum members, or text without `<` the length bounds (a pattern,
    when the schema has one and no bounds)."""
    values = s.get("enum", [s["const"]] if "const" in s else None)
    if values is not None:
        return either(*[const(v) for v in values])  # type: ignore[return-value]
    lo, hi = s.get("minLength", 0), s.get("maxLength")
    if "pattern" in s and lo == 0 and hi is None:
        return {"type": "regex", "pattern": s["pattern"].removeprefix("^").removesuffix("$")}
    if "pattern" in s or "format" in s:
        raise ValueError("forced calls in this format support string patterns or lengths, not both, and no format")
    return {"type": "regex", "pattern": f"{_RAW_CHAR}{{{lo},{'' if hi is None else hi}}}"}


def harmony(tools: list[dict[str, Any]], parallel: bool) -> Fmt:
    """`<|channel|>commentary to=functions.f <|constrain|>json<|message|>{...}<|call|>`: the prompt ends with
    `<|start|>assistant`, and `<|call|>` ends the generation, so one call whatever `parallel` says."""
    tags = [{"type": "tag", "begin": f"<|channel|>commentary to=functions.{t['function']['name']} "
                                     "<|constrain|>json<|message|>",
             "content": schema(fix_schema(t["function"]["parameters"])), "end": "<|call|>"} for t in tools]
    return calls(tags, "<|start|>assistant", False)


def pythonic(tools: list[dict[str, Any]], parallel: bool) -> Fmt:
    """`[f(a="x", n=1), g()]`: values are JSON (the parser reads JSON literals, true/false/null too)."""
    tags = []
    for t in tools:
        name = t["function"]["name"]
        if not _is_callee(name):
            raise ValueError(f"tool {name!r} cannot be called in the pythonic format (not a Python name)")
        params = _keywords(t["function"]["parameters"], lambda k, v: seq(const(f"{k}="), schema(fix_schema(v))),
                           ", ", python=True)
        tags.append(_tag(f"{name}(", params, ")"))
    return seq(const("["), calls(tags, ", ", parallel), const("]"))  # type: ignore[return-value]


def _is_callee(name: str) -> bool:
    try:
        node = ast.parse(name + "()", mode="eval").body
    except SyntaxError:
        return False
    return isinstance(node, ast.Call) and ast.unparse(node.func) == name


def _keywords(s: dict[str, Any], param: Any, sep: str, python: bool = False) -> Fmt | None:
    """The properties of object schema `s` in order, required ones always, optional ones maybe, `sep` between;
    each as `param(name, schema)`."""
    props = s.get("properties") or {}
    required = set(s.get("required") or [])
    if not required <= set(props):
        raise ValueError("a required parameter has no schema")
    items = [(param(k, v), k in required) for k, v in props.items()]
    for k in props:
        if python and not k.isidentifier():
            raise ValueError(f"parameter {k!r} cannot be a Python keyword argument")

    def rest(i: int, first: bool) -> Fmt | None:  # items i.. ; `first`: nothing written yet
        if i == len(items):
            return None
        item, req = items[i]
        this = item if first else seq(const(sep), item)
        if req:
            return seq(this, rest(i + 1, False))
        if first:
            return either(seq(this, rest(i + 1, False)), rest(i + 1, True))
        return seq(either(this, None), rest(i + 1, False))

    return rest(0, True)




def gemma(tools: list[dict[str, Any]], parallel: bool) -> Fmt:
    """`<start_function_call>call:f{k:<escape>text<escape>,n:1}<end_function_call>` (keys bare, strings between
    `<escape>`, other scalars as JSON)."""
    tags = [{"type": "tag", "begin": f"<start_function_call>call:{t['function']['name']}",
             "content": _gemma_value(t["function"]["parameters"]), "end": "<end_function_call>"} for t in tools]
    return calls(tags, "", parallel)


def _gemma_value(s: dict[str, Any]) -> Fmt:
    kind = s.get("type")
    values = s.get("enum", [s["const"]] if "const" in s else None)
    if values is not None:
        return either(*[_gemma_const(v) for v in values])  # type: ignore[return-value]
    if kind == "string":
        return seq(const("<escape>"), _text(s), const("<escape>"))  # type: ignore[return-value]
    if kind in ("integer", "number", "boolean", "null"):
        return schema(fix_schema(s))
    if kind == "object" or "properties" in s:
        inner = _keywords(s, lambda k, v: seq(const(f"{k}:"), _gemma_value(v)), ",")
        return seq(const("{"), inner, const("}"))  # type: ignore[return-value]
    if kind == "array" and isinstance(s.get("items"), dict):
        return seq(const("["), _items(_gemma_value(s["items"]), s.get("minItems", 0), s.get("maxItems")),
                   const("]"))  # type: ignore[return-value]
    raise ValueError(f"FunctionGemma forced calls do not support the schema {json.dumps(s)[:80]}")


def _items(item: Fmt, lo: int, hi: int | None) -> Fmt | None:
    """`lo` to `hi` (None: any number of) items, comma-separated."""
    if hi is not None and (hi > 32 or hi < lo):
        raise ValueError("FunctionGemma forced calls support arrays of at most 32 items")
    more = seq(const(","), item)
    tail: Fmt | None = {"type": "star", "content": more} if hi is None else None
    for _ in range(max(lo, 1), hi or 0):
        tail = either(seq(more, tail), None)
    head = seq(item, *[more] * (max(lo, 1) - 1), tail)
    return head if lo > 0 else either(head, None)


def _gemma_const(v: Any) -> Fmt:
    if isinstance(v, str):
        if "<escape>" in v:
            raise ValueError("a string enum value holds <escape>")
        return const(f"<escape>{v}<escape>")
    if isinstance(v, (dict, list)):
        raise ValueError("FunctionGemma forced calls do not support object or array constants")
    return const(json.dumps(v))
