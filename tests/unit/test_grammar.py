"""The grammar layer (shared/grammar) and structured output in the reference, mock and SGLang engines."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from protocol.messages import EngineRequest, Grammar, SamplingOptions, StopConditions
from shared.engine.base import EngineError
from shared.engine.mock import MockConfig, MockEngine
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.engine.sglang.mapping import sampling_params
from shared.grammar import GrammarCache, GrammarError, compile_count
from shared.tokenizer import Tokenizer

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "tags", "n"],
          "properties": {"name": {"type": "string", "maxLength": 6},
                         "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
                         "n": {"type": "integer", "minimum": 0, "maximum": 99}}}


def _req(rid: str, grammar: Grammar | None, max_tokens: int = 200, temperature: float = 0.0) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=list(b"json please"), grammar=grammar,
                         sampling=SamplingOptions(temperature=temperature, seed=1),
                         stop=StopConditions(max_tokens=max_tokens))


async def _text(engine: object, req: EngineRequest, tok: Tokenizer) -> tuple[str, str | None]:
    ids: list[int] = []
    reason = None
    async for chunk in engine.generate(req):  # type: ignore[attr-defined]
        ids += chunk.token_ids
        reason = chunk.finish_reason or reason
    return tok.decode(ids), reason


def test_cache_compiles_once_and_bad_grammars_say_why(tiny_model: Path) -> None:
    cache = GrammarCache.for_tokenizer(Tokenizer.from_dir(tiny_model))
    g = Grammar("json_schema", json.dumps(SCHEMA))
    cache.compile(g)
    before = compile_count()
    cache.compile(Grammar("json_schema", json.dumps(SCHEMA)))  # equal grammar: a cache hit
    assert compile_count() == before
    for bad, words in [(Grammar("json_schema", '{"type": "objekt"}'), "objekt"),
                       (Grammar("regex", "(ab"), "parenthesis"), (Grammar("ebnf", "root ::= "), "ebnf"),
                       (Grammar("nope", ""), "unknown grammar kind")]:
        with pytest.raises(GrammarError, match=words):
            cache.compile(bad)


async def test_reference_engine_batches_constrained_and_free_requests(tiny_model: Path) -> None:
    tok = Tokenizer.from_dir(tiny_model)
    eng = ReferenceEngine(ReferenceConfig(model_path=str(tiny_model), num_blocks=512))
    await eng.start()
    try:
        import asyncio

        free, schema, choice = await asyncio.gather(
            _text(eng, _req("free", None, 20), tok),
            _text(eng, _req("schema", Grammar("json_schema", json.dumps(SCHEMA))), tok),
            _text(eng, _req("choice", Grammar("ebnf", 'root ::= "yes" | "no"'), temperature=1.0), tok))
        jsonschema.validate(json.loads(schema[0]), SCHEMA)
        assert schema[1] == "stop"
        assert choice[0] in ("yes", "no") and choice[1] == "stop"
        assert free[1] == "length"
        with pytest.raises(EngineError, match="does not compile"):
            await _text(eng, _req("bad", Grammar("regex", "(")), tok)
        # disaggregated: the prefill worker's first token obeys the grammar too
        handoff = await eng.prefill(_req("pre", Grammar("ebnf", 'root ::= "yes" | "no"')))
        assert handoff.first_token in (ord("y"), ord("n"))
        await eng.release("pre")
    finally:
        await eng.stop()


async def test_mock_engine_draws_only_allowed_tokens_and_still_ends(tiny_model: Path) -> None:
    tok = Tokenizer.from_dir(tiny_model)
    eng = MockEngine(MockConfig(model_path=str(tiny_model), speedup=100.0))
    await eng.start()
    try:
        text, reason = await _text(eng, _req("m", Grammar("json_schema", json.dumps(SCHEMA)), 400), tok)
        jsonschema.validate(json.loads(text), SCHEMA)
        assert reason == "stop"
        _, reason = await _text(eng, _req("cut", Grammar("json_object"), 2), tok)
        assert reason == "length"
    finally:
        await eng.stop()


def test_sglang_mapping_passes_grammars_in_its_own_keys() -> None:
    for kind, key in [("json_schema", "json_schema"), ("regex", "regex"), ("ebnf", "ebnf"),
                      ("structural_tag", "structural_tag")]:
        assert sampling_params(_req("s", Grammar(kind, "SPEC")))[key] == "SPEC"
    assert sampling_params(_req("o", Grammar("json_object")))["json_schema"] == '{"type": "object"}'
    assert not {"json_schema", "regex", "ebnf"} & sampling_params(_req("f", None)).keys()
