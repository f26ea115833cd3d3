"""logit_bias and the repetition penalties: the reference engine against transformers, the mock, the formulas."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from protocol.messages import EngineRequest, SamplingOptions, StopConditions
from shared.engine.mock import MockConfig, MockEngine
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.engine.reference.logits import adjust_logits
from shared.engine.reference.sequence import SamplingSpec


async def _generate(engine: ReferenceEngine | MockEngine, prompt: list[int], n: int, **sampling: object) -> list[int]:
    req = EngineRequest(request_id="r", token_ids=prompt, sampling=SamplingOptions(temperature=0.0, **sampling),
                        stop=StopConditions(max_tokens=n, ignore_eos=True))
    return [t for c in [c async for c in engine.generate(req)] for t in c.token_ids]


@pytest.fixture
async def reference(tiny_model: Path):  # type: ignore[no-untyped-def]
    eng = ReferenceEngine(ReferenceConfig(model_path=str(tiny_model), num_blocks=256))
    await eng.start()
    yield eng
    await eng.stop()


def _hf_greedy(tiny_model: Path, prompt: list[int], n: int, **kw: object) -> list[int]:
    model = LlamaForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         do_sample=False, max_new_tokens=n, pad_token_id=0, eos_token_id=None, **kw)
    return out[0, len(prompt):].tolist()


PROMPT = list(b"Hello, shoal! Hello, shoal!")


@pytest.mark.parametrize("penalty", [1.5, 0.7])
async def test_repetition_penalty_matches_transformers(reference: ReferenceEngine, tiny_model: Path,
                                                       penalty: float) -> None:
    got = await _generate(reference, PROMPT, 24, repetition_penalty=penalty)
    assert got == _hf_greedy(tiny_model, PROMPT, 24, repetition_penalty=penalty)
    assert got != _hf_greedy(tiny_model, PROMPT, 24)  # the penalty changed something


async def test_logit_bias_100_makes_greedy_output_that_token(reference: ReferenceEngine) -> None:
    assert await _generate(reference, PROMPT, 8, logit_bias={ord("z"): 100.0}) == [ord("z")] * 8


async def test_logit_bias_minus_100_bans_the_greedy_token(reference: ReferenceEngine) -> None:
    plain = await _generate(reference, PROMPT, 1)
    banned = await _generate(reference, PROMPT, 1, logit_bias={plain[0]: -100.0})
    assert banned != plain


async def test_mock_logit_bias_picks_the_biased_token_and_skips_the_banned() -> None:
    eng = MockEngine(MockConfig(speedup=1000.0))
    await eng.start()
    try:
        assert await _generate(eng, [1, 2, 3], 5, logit_bias={7: 100.0}) == [7] * 5
        plain = await _generate(eng, [1, 2, 3], 5)
        banned = await _generate(eng, [1, 2, 3], 5, logit_bias={t: -100.0 for t in plain})
        assert not set(banned) & set(plain)
    finally:
        await eng.stop()


def test_frequency_and_presence_penalties_follow_openai_over_output_tokens_only() -> None:
    logits = torch.zeros(1, 6)
    spec = SamplingSpec(frequency_penalty=0.5, presence_penalty=0.25)
    tokens, prompt_len = [1, 1, 2, 2, 2, 3], 2  # token 1 is only in the prompt
    out = adjust_logits(logits, [spec], [(tokens, prompt_len)])
    assert out[0].tolist() == [0.0, 0.0, -(3 * 0.5 + 0.25), -(0.5 + 0.25), 0.0, 0.0]
    assert logits.abs().sum() == 0  # the caller's tensor is untouched


def test_no_adjustment_returns_the_same_tensor() -> None:
    logits = torch.randn(2, 5)
    assert adjust_logits(logits, [SamplingSpec(), SamplingSpec()], [None, None]) is logits


def test_sglang_gets_logit_bias_with_string_keys() -> None:
    from shared.engine.sglang.mapping import sampling_params

    req = EngineRequest(request_id="r", token_ids=[1], sampling=SamplingOptions(logit_bias={5: 100.0, 7: -3.5}))
    assert sampling_params(req)["logit_bias"] == {"5": 100.0, "7": -3.5}
    assert "logit_bias" not in sampling_params(EngineRequest(request_id="r", token_ids=[1]))
