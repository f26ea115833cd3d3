"""Issue 22's guards below HTTP: the frontend's request gate, the byte-bounded grammar cache and its pool, the
reference engine refusing out-of-vocabulary ids alone, generic words for internal errors."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import msgspec
import pytest

from protocol.messages import EngineRequest, ErrorCode, Grammar, SamplingOptions, StopConditions
from protocol.subjects import instance_subject
from services.frontend.limits import RequestGate, RequestLimits, json_problem
from services.frontend.openai_types import ChatCompletionRequest
from shared.engine.base import EngineError
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.errors import BadRequest, client_message
from shared.grammar import GrammarCache, GrammarError
from shared.grammar.pool import run_compile
from shared.http import Request
from shared.tokenizer import Tokenizer
from tests.llama import make_llama


def test_json_depth_and_64_bit_integers() -> None:
    assert json_problem(b'{"a": [[[1]]]}', 64) is None
    assert json_problem(b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}", 64) is not None
    assert json_problem(b'{"a": "' + b"[" * 500 + b'"}', 64) is None  # brackets inside strings do not nest
    assert json_problem(b'{"a": "x\\"[[[[[[", "b": 1}', 4) is None  # an escaped quote keeps the string open
    assert json_problem(b'{"seed": 18446744073709551615}', 64) is None  # uint64 max fits
    assert json_problem(b'{"seed": 18446744073709551616}', 64) is not None
    assert json_problem(b'{"seed": -9223372036854775809}', 64) is not None
    assert json_problem(b'{"x": 1.00000000000000000000001, "t": "123456789012345678901234"}', 64) is None


def _chat(**kw: object) -> ChatCompletionRequest:
    return msgspec.convert({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw},
                           ChatCompletionRequest)


def test_gate_checks_ids_user_prompt_and_grammar_bytes_and_drops_priority() -> None:
    gate = RequestGate(RequestLimits(max_grammar_bytes=1000), None)
    assert gate.request(_chat(priority=5), 100, 4096, None).priority is None
    trusted = RequestGate(RequestLimits(allow_client_priority=True), None)
    assert trusted.request(_chat(priority=5), 100, 4096, None).priority == 5
    for bad in (_chat(stop_token_ids=[100]), _chat(stop_token_ids=[-1]), _chat(user="u" * 257),
                _chat(messages=[{"role": "user", "content": "x" * 40_000}]),  # 32 x 1,000 tokens < 40 kB
                _chat(regex="a" * 2000)):
        with pytest.raises(BadRequest):
            gate.request(bad, 100, 1000, None)
    assert gate.request(_chat(stop_token_ids=[99], user="u" * 256), 100, 1000, None)


def _http(method: str, path: str, headers: dict[str, str]) -> Request:
    return Request(method, path, "", headers, b"{}", None)


def test_gate_http_content_type_host_and_protected_routes() -> None:
    gate = RequestGate(RequestLimits(allowed_hosts=("api.example", "[::1]"), protect_metrics=True), "k")
    ok = {"host": "api.example:8000", "content-type": "application/json"}
    assert gate.http(_http("POST", "/v1/chat/completions", ok)) is None
    assert gate.http(_http("POST", "/v1/chat/completions", {**ok, "host": "[::1]:80"})) is None
    assert gate.http(_http("POST", "/v1/chat/completions", {**ok, "host": "evil.example"})).status == 400
    assert gate.http(_http("POST", "/v1/chat/completions", {**ok, "content-type": "text/plain"})).status == 415
    assert gate.http(_http("GET", "/metrics", ok)).status == 401
    assert gate.http(_http("GET", "/metrics", {**ok, "authorization": "Bearer k"})) is None
    assert gate.http(_http("GET", "/live", ok)) is None
    assert RequestGate.instance("0123456789abcdef", "h") is None
    assert RequestGate.instance("0123456789abcde f", "h").status == 400
    with pytest.raises(ValueError):
        instance_subject("ns", "c", "e", "a b")


def test_internal_errors_reach_clients_as_generic_words() -> None:
    assert client_message(ErrorCode.INTERNAL, "KeyError: 'secret/path'") == "internal error while serving the request"
    assert client_message(ErrorCode.BAD_REQUEST, "min_tokens too big") == "min_tokens too big"


def test_grammar_cache_is_bounded_by_bytes(tiny_model: Path) -> None:
    tok = Tokenizer.from_dir(tiny_model)
    probe = GrammarCache.for_tokenizer(tok)
    cache = GrammarCache(probe.info, max_bytes=200_000)
    enums = [Grammar("json_schema", json.dumps({"enum": [f"v{k}{i}" for i in range(300)]})) for k in range(8)]
    for g in enums:
        cache.compile(g)
        assert cache.bytes <= 200_000
    assert 0 < len(cache._lru) < len(enums)


async def test_compiles_past_the_deadline_fail_and_queued_ones_never_start() -> None:
    started: list[int] = []
    gate = threading.Event()

    def slow(i: int) -> int:
        started.append(i)
        gate.wait(5)
        return i

    tasks = [asyncio.create_task(run_compile(lambda i=i: slow(i), timeout=0.3)) for i in range(6)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    gate.set()
    assert all(isinstance(r, GrammarError) for r in results)
    await asyncio.sleep(0.2)
    assert len(started) == 2  # the pool's two threads; the four queued were cancelled at their deadline


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llama(tmp_path_factory.mktemp("tiny-llama-guard"))


async def test_an_out_of_vocabulary_id_fails_its_request_alone(llama: Path) -> None:
    eng = ReferenceEngine(ReferenceConfig(model_path=str(llama), num_blocks=256))
    await eng.start()
    try:
        def req(rid: str, **stop: object) -> EngineRequest:
            return EngineRequest(request_id=rid, token_ids=[5, 6, 7, 8], sampling=SamplingOptions(temperature=0.0),
                                 stop=StopConditions(max_tokens=12, **stop))

        async def tokens(r: EngineRequest) -> list[int]:
            return [t async for c in eng.generate(r) for t in c.token_ids]

        alone = await tokens(req("alone"))
        hostile = [req("h1", stop_token_ids=[10**12], min_tokens=1), req("h2", stop_token_ids=[-3], min_tokens=1),
                   msgspec.structs.replace(req("h3"), sampling=SamplingOptions(temperature=0.0,
                                                                               logit_bias={10**9: 5.0}))]
        results = await asyncio.gather(tokens(req("normal")), *(tokens(h) for h in hostile), return_exceptions=True)
        assert results[0] == alone
        for r in results[1:]:
            assert isinstance(r, EngineError) and r.code == ErrorCode.BAD_REQUEST
    finally:
        await eng.stop()


def test_deploy_files_never_put_the_api_key_on_a_command_line() -> None:
    root = Path(__file__).resolve().parents[2] / "deploy"
    for f in root.rglob("*"):
        if f.is_file() and f.suffix in (".yaml", ".yml", ".sh", "") and "grafana" not in f.parts:
            text = f.read_text(errors="replace")
            assert "--api-key " not in text and "api-key:" not in text.replace("key: api-key", ""), f
    assert "secretKeyRef: {name: shoal-api, key: api-key" in (root / "k8s" / "frontend.yaml").read_text()
    assert "SHOAL_API_KEY: ${SHOAL_API_KEY:-}" in (root / "compose.yaml").read_text()
