"""Forced tool calls (`tool_choice` required / named) in the formats whose grammar shoal builds itself
(shared/grammar/tool_formats.py: DSML, MiniMax, harmony, pythonic, FunctionGemma): output drawn at random
among the tokens the grammar allows (as the mock engine does) parses, with that format's parser, into calls
of the offered tools whose arguments validate against their schemas; and the same through the chat route's
agent plan on the reference and mock engines (in process: cheap)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import jsonschema
import msgspec
import pytest

from protocol.messages import EngineRequest, Grammar, SamplingOptions, StopConditions
from services.frontend.agents import plan_chat
from services.frontend.openai_types import ChatCompletionRequest
from shared.engine.mock import MockConfig, MockEngine
from shared.engine.reference import ReferenceConfig, ReferenceEngine
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
    {"type": "object", "properties": {"unit": {"enum": ["c", "f"]},
                                      "n": {"type": "integer", "minimum": -5, "maximum": 5},
                                      "tags": {"type": "array", "items": {"type": "string", "maxLength": 3},
                                               "maxItems": 2},
                                      "where": {"type": "object",
                                                "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 99}},
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


async def test_engines_obey_and_the_frontend_plan_parses(tiny_model: Path) -> None:
    """Through the chat route's own agent plan (services/frontend/agents.py): its grammar on the reference engine
    (the tiny model's weights, greedy) and the mock engine (random allowed tokens), its parser over the
    output fed in small deltas: one call of an offered tool (the named one when named), arguments valid."""
    tok = Tokenizer.from_dir(tiny_model)
    engines = [ReferenceEngine(ReferenceConfig(model_path=str(tiny_model), num_blocks=512)),
               MockEngine(MockConfig(model_path=str(tiny_model), speedup=100.0))]
    for eng in engines:
        await eng.start()
    try:
        jobs, keys = [], []
        named = {"type": "function", "function": {"name": "f1"}}
        for n, fmt in enumerate(FORMATS):  # the reference engine is slower: one request a format
            for eng, choices in ((engines[0], ("required" if n % 2 else named,)), (engines[1], ("required", named))):
                for choice in choices:
                    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS,
                            "tool_choice": choice, "parallel_tool_calls": False}
                    plan = plan_chat(msgspec.convert(body, ChatCompletionRequest), fmt, None)
                    req = plan.apply(EngineRequest(request_id=f"{fmt}-{len(jobs)}", token_ids=list(b"call"),
                                                   sampling=SamplingOptions(temperature=0.0, seed=len(jobs)),
                                                   stop=StopConditions(max_tokens=1500)))
                    keys.append((fmt, choice, plan))
                    jobs.append(_generate(eng, req, tok))
        for (fmt, choice, plan), text in zip(keys, await asyncio.gather(*jobs), strict=True):
            parser = plan.new_parser()
            assert parser is not None
            deltas = [parser.feed(text[i : i + 3]) for i in range(0, len(text), 3)] + [parser.finish()]
            calls = join_calls([c for d in deltas for c in d.calls])
            assert len(calls) == 1 and not "".join(d.content for d in deltas).strip(), (fmt, text)
            assert choice == "required" or calls[0].name == "f1", (fmt, text)
            schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == calls[0].name)
            jsonschema.validate(json.loads(calls[0].arguments), schema)
    finally:
        for eng in engines:
            await eng.stop()


async def _generate(engine: object, req: EngineRequest, tok: Tokenizer) -> str:
    ids: list[int] = []
    async for chunk in engine.generate(req):  # type: ignore[attr-defined]
        ids += chunk.token_ids
    return tok.decode(ids)


def test_what_a_format_cannot_express_is_refused_with_the_reason() -> None:
    def tool(name: str, props: dict) -> list[dict]:
        return [{"type": "function", "function": {"name": name, "parameters": {"type": "object",
                                                                                 "properties": props}}}]

    for fmt, tools, words in [
        ("llama4", tool("get-weather", {}), "not a Python name"),
        ("llama4", tool("f", {"not ok": {"type": "string"}}), "Python keyword"),
        ("functiongemma", tool("f", {"s": {"type": "string", "pattern": "a+", "maxLength": 3}}), "patterns or"),
        ("functiongemma", tool("f", {"c": {"const": {"a": 1}}}), "constants"),
        ("minimax", tool("f", {"s": {"type": "string", "format": "date"}}), "no format"),
    ]:
        with pytest.raises(ValueError, match=words):
            forced_tool_grammar(fmt, tools, None, False)
