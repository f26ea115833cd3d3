"""Prompt logprobs (echo + logprobs): the reference engine computes them in prefill, equal to transformers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from protocol.messages import EngineRequest, OutputOptions
from shared.engine.base import EngineError
from shared.engine.mock import MockConfig, MockEngine
from shared.engine.reference import prompt_logprobs
from tests.unit import test_reference_engine as ref
from tests.unit.test_reference_engine import collect, greedy, prompts, started

model_dir, hf_model = ref.model_dir, ref.hf_model  # the module's fixtures (a tiny random Llama)


def hf_prompt_logprobs(model: LlamaForCausalLM, prompt: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return lp[:-1].gather(1, torch.tensor(prompt[1:])[:, None]).squeeze(1), lp[:-1]


def asking(rid: str, prompt: list[int], n: int, k: int = 0, **kw: object) -> EngineRequest:
    return greedy(rid, prompt, n, output=OutputOptions(logprobs=k, prompt_logprobs=k), **kw)


async def test_prompt_logprobs_equal_transformers_log_softmax(model_dir: Path, hf_model: LlamaForCausalLM,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # chunked prefill (32 tokens a step), a shared cached prefix, concurrent requests, logits 7 rows at a time
    monkeypatch.setattr(prompt_logprobs, "ROWS_AT_ONCE", 7)
    eng = await started(model_dir, page_size=8, max_batched_tokens=32)
    try:
        ps = prompts(4, seed=7)
        ps.append([*ps[0][:40], 5, 6, 7])  # its first blocks are cached by then: still recomputed
        await collect(eng, greedy("warm", ps[0], 1))
        results = await asyncio.gather(*(collect(eng, asking(str(i), p, 3, k=2)) for i, p in enumerate(ps)))
        for p, (_, chunks) in zip(ps, results, strict=True):
            first = chunks[0]
            assert first.prompt_logprobs is not None and len(first.prompt_logprobs) == len(p)
            assert first.prompt_logprobs[0] is None and first.prompt_top_logprobs[0] == []
            want, rows = hf_prompt_logprobs(hf_model, p)
            got = torch.tensor(first.prompt_logprobs[1:])
            assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
            top_vals, top_ids = rows.topk(2, dim=-1)
            for i, top in enumerate(first.prompt_top_logprobs[1:]):
                assert [t.token_id for t in top] == top_ids[i].tolist()
                assert torch.allclose(torch.tensor([t.logprob for t in top]), top_vals[i], atol=1e-4)
            assert all(c.prompt_logprobs is None for c in chunks[1:])  # once, on the first chunk
    finally:
        await eng.stop()


async def test_max_tokens_zero_scores_the_prompt_only(model_dir: Path, hf_model: LlamaForCausalLM) -> None:
    eng = await started(model_dir)
    try:
        p = prompts(1, seed=3)[0]
        tokens, chunks = await collect(eng, asking("z", p, 0))
        assert tokens == [] and chunks[-1].finish_reason == "length" and chunks[-1].usage.completion_tokens == 0
        want, _ = hf_prompt_logprobs(hf_model, p)
        assert torch.allclose(torch.tensor(chunks[0].prompt_logprobs[1:]), want, atol=1e-4)
        assert chunks[0].prompt_top_logprobs is None  # k = 0: no alternatives
        tokens, chunks = await collect(eng, greedy("plain", p, 2))  # not asked: not sent
        assert len(tokens) == 2 and all(c.prompt_logprobs is None for c in chunks)
    finally:
        await eng.stop()


async def test_mock_engine_refuses_prompt_logprobs() -> None:
    eng = MockEngine(MockConfig(output_tokens=[3, 4, 5]))
    await eng.start()
    try:
        with pytest.raises(EngineError, match="prompt logprobs") as e:
            await collect(eng, asking("m", [1, 2, 3], 2))  # type: ignore[arg-type]
        assert e.value.code == "bad_request"
    finally:
        await eng.stop()
