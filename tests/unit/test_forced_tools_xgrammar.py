"""Forced tool calls on any xgrammar shoal's dependency set allows: the builtin structural tag is asked only
for the options the installed version has (0.2.1, which SGLang 0.5.17 pins, has no `parallel_tool_calls`
nor `max_whitespace_cnt`: it raised a TypeError, a 500 on every `tool_choice: required`), and the tag is
made forced, one-call-or-several and whitespace-bounded by shoal itself."""

from __future__ import annotations

import json
from typing import Any

import pytest

xgr = pytest.importorskip("xgrammar")

from shared.grammar import tools as forced  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def _old_style(real: Any) -> Any:
    """xgrammar 0.2.1's signature, over the installed implementation (which may be 0.2.1 itself)."""
    def get_builtin_structural_tag(model: str, tools: Any = None, tool_choice: Any = "auto", reasoning: bool = True,
                                   force_reasoning: bool = False) -> Any:
        return real(model, tools=tools, tool_choice=tool_choice, reasoning=reasoning)

    return get_builtin_structural_tag


def _schemas(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        own = [node] if node.get("type") == "json_schema" else []
        return own + [s for v in node.values() for s in _schemas(v)]
    if isinstance(node, list):
        return [s for v in node for s in _schemas(v)]
    return []


@pytest.mark.parametrize("old", [False, True], ids=["installed", "xgrammar-0.2.1-signature"])
@pytest.mark.parametrize("parallel", [False, True])
def test_forced_grammar_on_either_xgrammar_api(monkeypatch: pytest.MonkeyPatch, old: bool, parallel: bool) -> None:
    if old:
        monkeypatch.setattr(xgr, "get_builtin_structural_tag", _old_style(xgr.get_builtin_structural_tag))
        assert "parallel_tool_calls" not in forced.builtin_tag_options()
    g = forced.forced_tool_grammar("qwen25", TOOLS, None, parallel)
    tag = json.loads(g.spec)
    fmt = tag["format"]
    assert fmt["type"] == "tags_with_separator" and fmt["at_least_one"] is True
    assert fmt["stop_after_first"] is (not parallel)
    if "max_whitespace_cnt" not in forced.builtin_tag_options():  # the schema travels as an EBNF grammar
        assert not _schemas(tag) and "root ::=" in json.dumps(tag)
    else:
        assert [s.get("max_whitespace_cnt") for s in _schemas(tag)] == [1]
    info = xgr.TokenizerInfo([chr(i) for i in range(32, 127)] + ["\n"])
    compiled = xgr.GrammarCompiler(info).compile_structural_tag(g.spec)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert xgr.GrammarMatcher(compiled).accept_string(call)
    assert not xgr.GrammarMatcher(compiled).accept_string(call.replace('"city": ', '"city":      '))
    two = xgr.GrammarMatcher(compiled).accept_string(call + "\n" + call)
    assert two is parallel
