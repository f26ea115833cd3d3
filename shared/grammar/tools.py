"""Forced tool calls (`tool_choice` "required" or a named function) as a grammar in the parser's own format.

Built on xgrammar's structural tags: its builtin model formats where one matches the
parser (and every xgrammar shoal runs has it), our own for Mistral and the formats in
shared/grammar/tool_formats.py (DSML, MiniMax, harmony, pythonic, FunctionGemma). The tools'
parameter schemas constrain the arguments, so even random weights produce a call that parses and validates.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from protocol.messages import Grammar
from shared.grammar import tool_formats as own
from shared.grammar.schema import fix_schema

# shoal's (SGLang's) --tool-call-parser names -> xgrammar's builtin structural-tag formats
_BUILTIN = {"hermes": "qwen_3", "qwen25": "qwen_3", "qwen": "qwen_3", "llama3": "llama",
            "qwen3_coder": "qwen_3_coder", "kimi_k2": "kimi", "deepseekv3": "deepseek_r1",
            "deepseekv31": "deepseek_v3_1", "glm45": "glm_4_7", "glm47": "glm_4_7"}
# formats whose grammar shoal builds itself (tool_formats.py), by parser name
_OWN = {"deepseekv32": own.dsml, "dsml": own.dsml, "deepseek": own.dsml, "minimax": own.minimax,
        "minimax-m2": own.minimax, "gpt-oss": own.harmony, "harmony": own.harmony, "llama4": own.pythonic,
        "pythonic": own.pythonic, "functiongemma": own.gemma, "gemma": own.gemma}
FORCEABLE = (*_BUILTIN, "mistral", *_OWN)


def _fixed(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "function": {**t["function"], "parameters": fix_schema(t["function"].get("parameters")
                                                                          or {"type": "object"})}}
            for t in tools]


def forced_tool_grammar(parser: str, tools: list[dict[str, Any]], name: str | None, parallel: bool) -> Grammar:
    """The grammar of one call (or several, when `parallel`) of the tools (only `name` when given).
    ValueError for a parser with no such grammar (see FORCEABLE)."""
    fixed = _fixed(tools)
    if parser == "mistral":
        tag = _mistral(fixed, name, parallel)
        _bound_whitespace(tag)
        return Grammar("structural_tag", json.dumps(tag, ensure_ascii=False))
    if parser in _OWN:
        chosen = [{**t, "function": {**t["function"], "parameters": t["function"].get("parameters")
                                      or {"type": "object"}}} for t in tools
                  if name is None or t["function"]["name"] == name]
        fmt = _OWN[parser](chosen, parallel)
        return Grammar("structural_tag", json.dumps({"type": "structural_tag", "format": fmt}, ensure_ascii=False))
    if parser not in _BUILTIN:
        raise ValueError(f"tool_choice required or named is not supported with the {parser!r} tool-call parser "
                         f"(supported: {', '.join(FORCEABLE)})")
    choice: Any = {"type": "function", "function": {"name": name}} if name else "required"
    tag = _builtin_tag(_BUILTIN[parser], fixed, choice, parallel)
    fmt = tag["format"]
    if fmt["type"] in ("triggered_tags", "tags_with_separator"):  # forced: only calls, at least one
        tag["format"] = {"type": "tags_with_separator", "tags": fmt["tags"], "at_least_one": True,
                         "stop_after_first": not parallel, "separator": "; " if parser == "llama3" else "\n"}
    _bound_whitespace(tag)
    return Grammar("structural_tag", json.dumps(tag, ensure_ascii=False))


def builtin_tag_options() -> frozenset[str]:
    """The keyword arguments the installed xgrammar's `get_builtin_structural_tag` takes (0.2.1, which
    SGLang 0.5.17 pins, has no `parallel_tool_calls` or `max_whitespace_cnt`; 0.2.9 has both)."""
    import xgrammar as xgr  # here: it takes seconds to import

    return frozenset(inspect.signature(xgr.get_builtin_structural_tag).parameters)


def _builtin_tag(fmt: str, tools: list[dict[str, Any]], choice: Any, parallel: bool) -> dict[str, Any]:
    """xgrammar's structural tag for `fmt`, asking only for the options this xgrammar has: the rest
    (one call or several, bounded whitespace) `forced_tool_grammar` sets on the tag itself."""
    import xgrammar as xgr

    optional = {"parallel_tool_calls": parallel, "max_whitespace_cnt": 1}
    known = builtin_tag_options()
    extra = {k: v for k, v in optional.items() if k in known}
    tag = xgr.get_builtin_structural_tag(fmt, tools=tools, tool_choice=choice, reasoning=False, **extra)
    return json.loads(tag.model_dump_json())


def _bound_whitespace(node: Any, counted: bool | None = None) -> None:
    """At most one whitespace character between JSON tokens in every json_schema of the tag, as the
    reference engine's response_format grammars. An xgrammar whose structural tags take no
    `max_whitespace_cnt` (0.2.1 accepts the key and ignores it) gets the schema as an EBNF grammar
    compiled without free whitespace instead."""
    if counted is None:
        counted = "max_whitespace_cnt" in builtin_tag_options()
    if isinstance(node, dict):
        if node.get("type") == "json_schema" and "json_schema" in node and node.get("style", "json") == "json":
            if counted:
                if node.get("max_whitespace_cnt") is None:
                    node["max_whitespace_cnt"] = 1
            else:
                schema = node.pop("json_schema")
                node.clear()
                node.update(type="grammar", grammar=_schema_ebnf(schema))
            return
        for v in node.values():
            _bound_whitespace(v, counted)
    elif isinstance(node, list):
        for v in node:
            _bound_whitespace(v, counted)


def _schema_ebnf(schema: Any) -> str:
    import xgrammar as xgr

    return str(xgr.Grammar.from_json_schema(json.dumps(schema, ensure_ascii=False), any_whitespace=False,
                                            strict_mode=True))


def _mistral(tools: list[dict[str, Any]], name: str | None, parallel: bool) -> dict[str, Any]:
    """`[TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]`."""
    tags = [{"type": "tag", "begin": f'{{"name": {json.dumps(t["function"]["name"])}, "arguments": ',
             "content": {"type": "json_schema", "json_schema": t["function"]["parameters"], "max_whitespace_cnt": 1},
             "end": "}"}
            for t in tools if name is None or t["function"]["name"] == name]
    calls = {"type": "tags_with_separator", "tags": tags, "separator": ", ", "at_least_one": True,
             "stop_after_first": not parallel}
    return {"type": "structural_tag", "format": {"type": "sequence", "elements": [
        {"type": "const_string", "value": "[TOOL_CALLS]["}, calls, {"type": "const_string", "value": "]"}]}}
