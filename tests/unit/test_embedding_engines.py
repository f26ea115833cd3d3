"""Embeddings in each engine: the wire structs, mock determinism, reference vs transformers, SGLang's adapter."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM

from protocol import codec
from protocol.embeddings import EmbedRequest, EmbedResponse
from protocol.messages import EngineRequest, StopConditions
from shared.engine.base import EngineError
from shared.engine.mock import MockConfig, MockEngine
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.engine.sglang import SglangEngine
from shared.engine.sglang.args import SglangConfig
from tests.sglang_stub import stub_io_struct


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


# ---- protocol ---------------------------------------------------------------------------------
def test_embed_structs_round_trip() -> None:
    req = EmbedRequest(request_id="e1", inputs=[[1, 2, 3], [4]], model="m", normalize=False,
                       annotations={"k": "v"})
    resp = EmbedResponse(embeddings=[[0.5, -0.25], [1.0, 0.0]], prompt_tokens=4)
    assert codec.decode(codec.encode(req), EmbedRequest) == req
    assert codec.decode(codec.encode(resp), EmbedResponse) == resp
    plain = EmbedRequest(request_id="e2", inputs=[[7]])
    assert codec.decode(codec.encode(plain), EmbedRequest).normalize is True
    assert b"normalize" not in codec.encode(plain)  # defaults stay off the wire


# ---- mock -------------------------------------------------------------------------------------
async def test_mock_embeddings_are_deterministic_and_normalised() -> None:
    eng = MockEngine(MockConfig(speedup=1000, context_length=64))
    await eng.start()
    try:
        a, b, a2 = await eng.embed([[1, 2, 3], [1, 2, 4], [1, 2, 3]])
        assert len(a) == 64 and a == a2 and a != b
        assert abs(norm(a) - 1.0) < 1e-9 and abs(norm(b) - 1.0) < 1e-9
        (raw,) = await eng.embed([[1, 2, 3]], normalize=False)
        assert abs(norm(raw) - 1.0) > 1e-3
        assert all(abs(x / norm(raw) - y) < 1e-12 for x, y in zip(raw, a, strict=True))
        assert await MockEngine(MockConfig(speedup=1000)).embed([[1, 2, 3]]) == [a]  # across instances
        for bad, code in (([], "bad_request"), ([[1], []], "bad_request"), ([[1] * 65], "context_length_exceeded")):
            with pytest.raises(EngineError) as err:
                await eng.embed(bad)
            assert err.value.code == code
    finally:
        await eng.stop()


# ---- reference --------------------------------------------------------------------------------
def hf_last_hidden(model: LlamaForCausalLM, ids: list[int], normalize: bool) -> torch.Tensor:
    with torch.no_grad():
        h = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    return torch.nn.functional.normalize(h, dim=-1) if normalize else h


async def test_reference_embeddings_equal_transformers_last_token_hidden_state(tiny_model: Path) -> None:
    hf = LlamaForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    eng = ReferenceEngine(ReferenceConfig(model_path=str(tiny_model), num_blocks=64, max_batched_tokens=64))
    await eng.start()
    try:
        inputs = [[5, 6, 7], list(range(40, 80)), [9], [100 + i for i in range(30)], [3, 1, 4, 1, 5]]
        got = await eng.embed(inputs)  # 64-token budget: several padded batches
        raw = await eng.embed(inputs, normalize=False)
        for ids, g, r in zip(inputs, got, raw, strict=True):
            assert len(g) == hf.config.hidden_size
            assert torch.allclose(torch.tensor(g), hf_last_hidden(hf, ids, True), atol=1e-5)
            assert torch.allclose(torch.tensor(r), hf_last_hidden(hf, ids, False), atol=1e-4)
            assert abs(norm(g) - 1.0) < 1e-5
        assert eng.load().kv_used_blocks == 0  # embedding takes no KV blocks
        req = EngineRequest(request_id="g", token_ids=[1, 2, 3], stop=StopConditions(max_tokens=2))
        chunks = [c async for c in eng.generate(req)]  # and the engine still generates
        assert sum(len(c.token_ids) for c in chunks) == 2
        with pytest.raises(EngineError) as err:
            await eng.embed([[hf.config.vocab_size]])
        assert err.value.code == "bad_request"
        with pytest.raises(EngineError) as err:
            await eng.embed([[1] * (eng.context_length() + 1)])
        assert err.value.code == "context_length_exceeded"
    finally:
        await eng.stop()


async def test_sglang_without_is_embedding_refuses_embeddings() -> None:
    cfg = SglangConfig(model_path="/m", argv=("--model-path", "/m"), parsed=False, page_size=16)
    eng = SglangEngine(cfg)
    eng.sgl = object()
    with pytest.raises(EngineError) as err:
        await eng.embed([[1, 2]])
    assert err.value.code == "bad_request" and "--is-embedding" in err.value.message


# ---- sglang -----------------------------------------------------------------------------------
class FakeTokenizerManager:
    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.aborted: list[str] = []
        self.requests: list[Any] = []

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        self.aborted.append(rid)

    def generate_request(self, obj: Any, request: Any) -> Any:
        self.requests.append(obj)

        async def gen() -> Any:
            yield self.owner.answer(obj.input_ids)

        return gen()


def _vec(ids: list[int]) -> list[float]:
    return [float(len(ids)), float(sum(ids)), 1.0]


class FakeSglNew:
    """An SGLang whose async_encode takes token ids."""

    def __init__(self, error: Exception | None = None) -> None:
        self.tokenizer_manager = FakeTokenizerManager(self)
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def answer(self, ids: Any) -> Any:
        if ids and isinstance(ids[0], int):
            return {"embedding": _vec(ids), "meta_info": {"prompt_tokens": len(ids)}}
        return [{"embedding": _vec(x), "meta_info": {"prompt_tokens": len(x)}} for x in ids]

    async def async_encode(self, prompt: Any = None, input_ids: Any = None, rid: Any = None) -> Any:
        self.calls.append({"input_ids": input_ids, "rid": rid})
        if self.error is not None:
            raise self.error
        return self.answer(input_ids)


class FakeSglOld(FakeSglNew):
    """An SGLang whose async_encode takes text only: the adapter builds EmbeddingReqInput itself."""

    async def async_encode(self, prompt: Any, image_data: Any = None, rid: Any = None) -> Any:  # type: ignore[override]
        raise AssertionError("token ids cannot go through this async_encode")


def _sgl_engine(sgl: Any, embedding: bool = True) -> SglangEngine:
    argv = ("--model-path", "/m", *(("--is-embedding",) if embedding else ()))
    eng = SglangEngine(SglangConfig(model_path="/m", argv=argv, parsed=False, page_size=16))
    eng.sgl = sgl
    eng._context_length = 32
    return eng


async def test_sglang_embed_passes_token_ids_and_maps_results() -> None:
    sgl = FakeSglNew()
    eng = _sgl_engine(sgl)
    assert eng.embedding
    raw = await eng.embed([[1, 2], [3, 4, 5]], normalize=False)
    assert raw == [_vec([1, 2]), _vec([3, 4, 5])]
    assert sgl.calls[0]["input_ids"] == [[1, 2], [3, 4, 5]] and len(set(sgl.calls[0]["rid"])) == 2
    (one,) = await eng.embed([[7]])  # a single input goes as one request, not a batch of one
    assert sgl.calls[1]["input_ids"] == [7] and isinstance(sgl.calls[1]["rid"], str)
    assert abs(norm(one) - 1.0) < 1e-12 and one == [x / norm(_vec([7])) for x in _vec([7])]
    assert sgl.tokenizer_manager.aborted == []
    with pytest.raises(EngineError) as err:
        await eng.embed([[1] * 33])
    assert err.value.code == "context_length_exceeded" and len(sgl.calls) == 2
    with pytest.raises(EngineError) as err:  # an embedding engine does not generate
        async for _ in eng.generate(EngineRequest(request_id="r", token_ids=[1])):
            pass
    assert err.value.code == "bad_request"


async def test_sglang_embed_without_input_ids_in_async_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    class EmbeddingReqInput(SimpleNamespace):
        pass

    stub_io_struct(monkeypatch, EmbeddingReqInput=EmbeddingReqInput)
    sgl = FakeSglOld()
    got = await _sgl_engine(sgl).embed([[1, 2], [3]], normalize=False)
    assert got == [_vec([1, 2]), _vec([3])]
    (req,) = sgl.tokenizer_manager.requests
    assert req.input_ids == [[1, 2], [3]] and len(req.rid) == 2


async def test_sglang_embed_failure_aborts_and_maps_the_error() -> None:
    sgl = FakeSglNew(error=ValueError("The input (40 tokens) is longer than the model's context length"))
    eng = _sgl_engine(sgl)
    with pytest.raises(EngineError) as err:
        await eng.embed([[1, 2], [3]])
    assert err.value.code == "context_length_exceeded"
    assert sorted(sgl.tokenizer_manager.aborted) == sorted(sgl.calls[0]["rid"])
