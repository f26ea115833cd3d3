"""Forced tool calls (`tool_choice` "required" or a named function) as a grammar in the parser's own format.

Built on xgrammar's structural tags: its builtin model formats where one matches the
parser (and every xgrammar shoal runs has it), our own for Mistral and the formats in
shared/grammar/tool_formats.py (DSML, MiniMax, harmony, pythonic, FunctionGemma). The tools'
parameter schemas constrain the arguments, so even random weights produce a call that parses and validates.
"""

from __future__ import annotations

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
        return Grammar("structural_tag", json.dumps(_mistral(fixed, name, parallel), ensure_ascii=False))
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
    import xgrammar as xgr  # here: it takes seconds to import

    tag = json.loads(xgr.get_builtin_structural_tag(
        _BUILTIN[parser], tools=fixed, tool_choice=choice, reasoning=False, parallel_tool_calls=parallel,
        max_whitespace_cnt=1).model_dump_json())
    fmt = tag["format"]
    if fmt["type"] == "triggered_tags":  # free text may follow the calls: forced, only calls may
        tag["format"] = {"type": "tags_with_separator", "tags": fmt["tags"], "at_least_one": True,
                         "stop_after_first": not parallel, "separator": "; " if parser == "llama3" else "\n"}
    return Grammar("structural_tag", json.dumps(tag, ensure_ascii=False))


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
