"""The reference engine's sampler on hand-made logits."""

from __future__ import annotations

import torch

from shared.engine.reference.sampler import sample
from shared.engine.reference.sequence import SamplingSpec

LOGITS = torch.tensor([[0.0, 3.0, 2.9, 1.0, -2.0]])


def draws(spec: SamplingSpec, n: int = 200, banned: frozenset[int] = frozenset()) -> set[int]:
    return {sample(LOGITS, [spec], [banned]).tokens[0] for _ in range(n)}


def test_greedy_is_argmax_and_banned_ids_are_skipped() -> None:
    assert draws(SamplingSpec(temperature=0.0), 3) == {1}
    assert draws(SamplingSpec(temperature=0.0), 3, banned=frozenset({1})) == {2}


def test_top_k_top_p_min_p_narrow_the_choice() -> None:
    assert draws(SamplingSpec(temperature=1.0, top_k=2)) == {1, 2}
    assert draws(SamplingSpec(temperature=1.0, top_p=0.3)) == {1}
    assert draws(SamplingSpec(temperature=1.0, min_p=0.5)) == {1, 2}
    assert len(draws(SamplingSpec(temperature=5.0))) >= 4


def test_seeded_generator_repeats_and_rows_are_independent() -> None:
    def run(seed: int) -> list[int]:
        spec = SamplingSpec(temperature=2.0, generator=torch.Generator().manual_seed(seed))
        return [sample(LOGITS.repeat(2, 1), [spec, SamplingSpec(temperature=2.0)], [frozenset()] * 2).tokens[0]
                for _ in range(30)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_logprobs_come_from_the_raw_distribution() -> None:
    out = sample(LOGITS, [SamplingSpec(temperature=0.0, logprobs=2)], [frozenset()])
    ref = torch.log_softmax(LOGITS[0], dim=-1)
    assert out.logprobs is not None and abs(out.logprobs[0] - float(ref[1])) < 1e-6
    top = out.top[0]
    assert top is not None and [t.token_id for t in top] == [1, 2]
    assert sample(LOGITS, [SamplingSpec()], [frozenset()]).logprobs is None
