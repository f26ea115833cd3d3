"""Cross-encoder scoring: the Scorer capability, the score role, SGLang's rerank path on a fake sglang, pairing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from protocol.scoring import ScoreRequest
from services.frontend.rerank import score_pairs
from services.worker.args import parse
from services.worker.roles import role_factory
from shared.engine.base import EngineError
from shared.engine.capabilities import Scorer
from shared.engine.reference import ReferenceConfig
from shared.engine.reference.cross_encoder import CrossEncoderEngine, is_cross_encoder
from shared.engine.registry import EngineOptions, make_engine
from shared.engine.sglang import SglangEngine
from shared.engine.sglang.args import SglangConfig
from shared.errors import BadRequest
from tests.sglang_stub import stub_io_struct
from tests.unit.test_capabilities import engines


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.tiny_cross_encoder import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "ce", seed=1)


def test_scorer_capability_is_the_cross_encoder_and_sglang(cross_encoder: Path) -> None:
    assert is_cross_encoder(str(cross_encoder))
    engine = make_engine(EngineOptions(engine="reference", model_path=str(cross_encoder)))
    assert isinstance(engine, CrossEncoderEngine) and isinstance(engine, Scorer)
    has = {name for name, e in engines().items() if isinstance(e, Scorer)}
    assert has == {"sglang"}  # mock, diffusion and the decoder reference engine do not score pairs
    cfg = parse(["--model-path", "/m", "--score"])
    assert cfg.score and cfg.endpoint == "score" and not cfg.embedding
    assert role_factory(cfg, engine).__module__ == "services.worker.roles.score"
    from services.worker.roles.score import score_role

    with pytest.raises(EngineError, match="does not score pairs"):
        asyncio.run(score_role(None, cfg, engines()["mock"]))  # type: ignore[arg-type]


async def test_reference_cross_encoder_scores_equal_transformers(cross_encoder: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from shared.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(cross_encoder)
    pairs = [("what is a cat", "a cat is an animal"), ("hi", "the weather is nice today, isn't it?"), ("a", "b")]
    enc = tok.backend.encode_batch(pairs)
    ids, types = [e.ids for e in enc], [e.type_ids for e in enc]
    eng = CrossEncoderEngine(ReferenceConfig(model_path=str(cross_encoder), max_batched_tokens=40))  # 2 batches
    await eng.start()
    try:
        got = await eng.score(ids, types)
        with pytest.raises(EngineError, match="vocabulary"):
            await eng.score([[10**6]], [])
    finally:
        await eng.stop()
    hf = AutoModelForSequenceClassification.from_pretrained(cross_encoder, dtype=torch.float32).eval()
    with torch.no_grad():
        want = [torch.sigmoid(hf(torch.tensor([i]), token_type_ids=torch.tensor([t])).logits[0, 0]).item()
                for i, t in zip(ids, types, strict=True)]
    assert got == pytest.approx(want, abs=1e-5)


class FakeTokenizerManager:
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.aborted: list[str] = []

    def generate_request(self, obj: Any, request: Any) -> Any:
        self.requests.append(obj)

        async def answer() -> Any:  # SGLang's cross-encoder answer: one item per pair, the score as "embedding"
            out = [{"embedding": [0.1 * (i + 1)] if i % 2 else 0.1 * (i + 1), "meta_info": {}}
                   for i in range(len(obj.text))]
            yield out

        return answer()

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        self.aborted.append(rid)


async def test_sglang_scores_by_its_own_cross_encoder_path(monkeypatch: pytest.MonkeyPatch) -> None:
    class EmbeddingReqInput(SimpleNamespace):
        pass

    stub_io_struct(monkeypatch, EmbeddingReqInput=EmbeddingReqInput)
    eng = SglangEngine(SglangConfig(model_path="/m", argv=("--model-path", "/m", "--is-embedding"), parsed=False,
                                    page_size=16))
    eng.sgl = SimpleNamespace(tokenizer_manager=FakeTokenizerManager())
    eng._context_length = 64
    texts = [["q", "d0"], ["q", "d1"], ["q", "d2"]]
    got = await eng.score([[1, 2], [1, 3], [1, 4]], [], texts)
    assert got == pytest.approx([0.1, 0.2, 0.3])
    (req,) = eng.sgl.tokenizer_manager.requests
    assert req.is_cross_encoder_request is True and req.text == texts and len(set(req.rid)) == 3
    with pytest.raises(EngineError, match="texts"):
        await eng.score([[1, 2]], [], None)
    plain = SglangEngine(SglangConfig(model_path="/m", argv=("--model-path", "/m"), parsed=False, page_size=16))
    with pytest.raises(EngineError, match="is-embedding"):
        await plain.score([[1]], [], [["q", "d"]])


def test_score_pairs_follow_vllm() -> None:
    assert score_pairs("q", ["a", "b"]) == [("q", "a"), ("q", "b")]
    assert score_pairs(["q"], "a") == [("q", "a")]
    assert score_pairs(["q", "r"], ["a", "b"]) == [("q", "a"), ("r", "b")]
    with pytest.raises(BadRequest, match="item by item"):
        score_pairs(["q", "r"], ["a", "b", "c"])
    with pytest.raises(BadRequest):
        score_pairs([], ["a"])
    assert ScoreRequest("r", [[1]]).token_type_ids == []
