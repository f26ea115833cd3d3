"""The reference engine's sampler on hand-made logits."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare
from transformers import MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

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


# ---- distributions: 20k seeded draws per setting against transformers' logits processors -----------
DIST_LOGITS = torch.tensor([2.0, 1.6, 1.1, 0.7, 0.2, -0.4, -1.0, -2.5])
DRAWS = 20_000
SETTINGS = [
    (SamplingSpec(temperature=1.0), []),
    (SamplingSpec(temperature=0.5), [TemperatureLogitsWarper(0.5)]),
    (SamplingSpec(temperature=1.7), [TemperatureLogitsWarper(1.7)]),
    (SamplingSpec(temperature=0.8, top_k=3), [TemperatureLogitsWarper(0.8), TopKLogitsWarper(3)]),
    (SamplingSpec(temperature=1.3, top_p=0.7), [TemperatureLogitsWarper(1.3), TopPLogitsWarper(0.7)]),
    (SamplingSpec(temperature=1.0, top_p=0.9), [TopPLogitsWarper(0.9)]),
    (SamplingSpec(temperature=1.5, min_p=0.2), [TemperatureLogitsWarper(1.5), MinPLogitsWarper(0.2)]),
]


def reference_probs(processors: list) -> torch.Tensor:
    """The distribution transformers samples from after `processors` (in generate's order)."""
    scores = DIST_LOGITS[None, :].clone()
    for p in processors:
        scores = p(torch.zeros(1, 1, dtype=torch.long), scores)
    return torch.softmax(scores, dim=-1)[0].double()


def draw_counts(spec: SamplingSpec, seed: int) -> torch.Tensor:
    """DRAWS draws in one batched call, from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = sample(DIST_LOGITS.repeat(DRAWS, 1), [spec] * DRAWS, [frozenset()] * DRAWS)
    return torch.bincount(torch.tensor(out.tokens), minlength=DIST_LOGITS.numel()).double()


@pytest.mark.parametrize(("spec", "processors"), SETTINGS, ids=[str(i) for i in range(len(SETTINGS))])
def test_draws_follow_the_transformers_distribution(spec: SamplingSpec, processors: list) -> None:
    want = reference_probs(processors)
    counts = draw_counts(spec, seed=1234)
    kept = want > 0
    assert counts[~kept].sum() == 0, (counts, want)  # nothing outside what the filters keep
    expected = want[kept] / want[kept].sum() * DRAWS  # exact sums: chisquare checks them
    stat, p = chisquare(counts[kept].numpy(), expected.numpy())
    assert p > 1e-3, (spec, stat, p, counts.tolist(), expected.tolist())
