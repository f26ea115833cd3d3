"""Forced tool calls (`tool_choice` required / named) in the formats whose grammar shoal builds itself
(shared/grammar/tool_formats.py: DSML, MiniMax, harmony, pythonic, FunctionGemma): output drawn at random
among the tokens the grammar allows (as the mock engine does) parses, with that format's parser, into calls
of the offered tools whose arguments validate against their schemas."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest

from protocol.messages import Grammar
from shared.grammar import GrammarCache, TokenMask
from shared.grammar.tools import forced_tool_grammar
from shared.parsers import OutputParser, join_calls
from shared.parsers.tool_formats import tool_format
from shared.tokenizer import Tokenizer

FORMATS = ("deepseekv32", "minimax", "gpt-oss", "llama4", "functiongemma")
PARAMS = [
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6},
                                      "days": {"type": "integer", "minimum": 1, "maximum": 9},
                                      "metric": {"type": "boolean"}}, "required": ["city"]},
    {"type": "object", "properties": {"unit": {"enum": ["c", "f"]}, "n": {"type": "integer", "minimum": -5, "maximum": 5},
                                      "tags": {"type": "array", "items": {"type": "string", "maxLength": 3},
                                               "maxItems": 2},
                                      "where": {"type": "object", "properties": {"x": {"type": "integer"}},
                                                "required": ["x"]}}, "required": ["unit", "where"]},
    {"type": "object", "properties": {}},
]
TOOLS = [{"type": "function", "function": {"name": f"f{i}", "parameters": p}} for i, p in enumerate(PARAMS)]


def _sample(cache: GrammarCache, tok: Tokenizer, grammar: Grammar, rng: random.Random, limit: int = 2000) -> str:
    mask = TokenMask(cache.compile(grammar), cache.vocab_size)
    ids: list[int] = []
    while not mask.done and len(ids) < limit:
        allowed = mask.allowed_ids().tolist()
        pick = rng.choice(allowed)
        assert mask.accept(pick)
        if pick in tok.eos_token_ids:
            break
        ids.append(pick)
    assert len(ids) < limit, f"the grammar did not end: {tok.decode(ids)!r}"
    return tok.decode(ids)


@pytest.mark.parametrize("fmt", FORMATS)
def test_forced_calls_parse_and_validate(tiny_model: Path, fmt: str) -> None:
    tok = Tokenizer.from_dir(tiny_model)
    cache = GrammarCache.for_tokenizer(tok)
    rng = random.Random(20)
    for parallel, name in ((False, None), (True, None), (False, "f1")):
        grammar = forced_tool_grammar(fmt, TOOLS, name, parallel)
        for _ in range(4):
            text = _sample(cache, tok, grammar, rng)
            parsed = OutputParser(tool_format(fmt, TOOLS), None).parse(text)
            calls = join_calls(parsed.calls)
            assert calls and not parsed.content.strip(), (fmt, text, parsed)
            assert len(calls) == 1 or (parallel and fmt != "gpt-oss"), text
            for c in calls:
                assert name is None or c.name == name, text
                schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == c.name)
                jsonschema.validate(json.loads(c.arguments), schema)
