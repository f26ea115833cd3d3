"""The unmasking algorithm (low-confidence remasking) and a request's block bookkeeping, without a model."""

from __future__ import annotations

import pytest
import torch

from protocol.messages import EngineRequest, StopConditions
from shared.engine.diffusion.state import DiffusionRequest, block_output
from shared.engine.diffusion.unmask import Block, Commit, transfer_schedule, unmask_step

MASK = 9
VOCAB = 10


def logits_for(rows: list[tuple[int, float]]) -> torch.Tensor:
    """Logits whose softmax gives token `tok` probability `p` in each row (the mask token: none)."""
    out = torch.full((len(rows), VOCAB), 0.0)
    for i, (tok, p) in enumerate(rows):
        rest = (1 - p) / (VOCAB - 2)
        out[i] = torch.log(torch.tensor(rest))
        out[i, tok] = torch.log(torch.tensor(p))
        out[i, MASK] = float("-inf")
    return out


@pytest.mark.parametrize(("masked", "steps", "want"), [
    (8, 8, [1] * 8), (8, 4, [2, 2, 2, 2]), (8, 3, [3, 3, 2]), (5, 2, [3, 2]), (3, 8, [1, 1, 1]), (0, 4, []),
    (8, 1, [8]),
])
def test_transfer_schedule_spreads_the_block_over_the_steps(masked: int, steps: int, want: list[int]) -> None:
    assert transfer_schedule(masked, steps) == want
    assert sum(want) == masked


def test_k_most_confident_masked_positions_are_committed() -> None:
    block = [MASK, 4, MASK, MASK]  # offset 1 is already committed: never chosen again
    lg = logits_for([(1, 0.5), (7, 0.99), (2, 0.9), (3, 0.2)])
    c = unmask_step(lg, block, MASK, k=2)
    assert c.positions == [0, 2] and c.tokens == [1, 2]
    assert c.logprobs == pytest.approx([torch.log(torch.tensor(0.5)).item(), torch.log(torch.tensor(0.9)).item()],
                                       abs=1e-5)
    assert unmask_step(lg, block, MASK, k=10).positions == [0, 2, 3]  # k beyond the masks: all of them


def test_threshold_commits_every_confident_prediction_or_the_best_one() -> None:
    block = [MASK] * 4
    lg = logits_for([(1, 0.97), (2, 0.5), (3, 0.96), (4, 0.3)])
    assert unmask_step(lg, block, MASK, k=1, threshold=0.95).positions == [0, 2]
    low = unmask_step(lg, block, MASK, k=1, threshold=0.99)  # none above: the single most confident
    assert low.positions == [0] and low.tokens == [1]


def test_banned_ids_stay_out_of_the_first_rows() -> None:
    lg = logits_for([(5, 0.9), (5, 0.9)])
    c = unmask_step(lg, [MASK, MASK], MASK, k=2, banned=[5], banned_rows=1)
    assert c.tokens[0] != 5 and c.tokens[1] == 5


def test_a_block_is_denoised_in_exactly_steps_iterations() -> None:
    blk = Block.new(start=3, length=8, mask_id=MASK, steps=4)
    torch.manual_seed(0)
    rounds = 0
    while not blk.done:
        c = unmask_step(torch.randn(8, VOCAB), blk.tokens, MASK, k=blk.k())
        assert len(c.positions) == 2 and all(blk.tokens[p] == MASK for p in c.positions)
        blk.commit(c)
        rounds += 1
    assert rounds == 4 and blk.masked == [] and blk.iteration == 4
    with pytest.raises(ValueError, match="already committed"):
        blk.commit(Commit([0], [1], [0.0]))


def test_temperature_draws_repeat_for_a_seed_and_differ_across_seeds() -> None:
    torch.manual_seed(1)
    lg = torch.randn(16, VOCAB) * 0.1  # flat: draws differ from the argmax
    def draw(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return unmask_step(lg, [MASK] * 16, MASK, k=16, temperature=1.0, generator=g).tokens
    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    greedy = unmask_step(lg, [MASK] * 16, MASK, k=16).tokens
    assert greedy == lg[:, :MASK].argmax(-1).tolist() and draw(7) != greedy  # the mask token is never predicted


def test_the_mask_token_is_never_predicted() -> None:
    lg = torch.zeros(3, VOCAB)
    lg[:, MASK] = 100.0
    c = unmask_step(lg, [MASK] * 3, MASK, k=3, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert MASK not in c.tokens and len(c.tokens) == 3


def _req(max_tokens: int = 16, min_tokens: int = 0, generated: int = 0) -> DiffusionRequest:
    r = EngineRequest("r", [1, 2, 3], stop=StopConditions(max_tokens=max_tokens, min_tokens=min_tokens))
    return DiffusionRequest(request=r, tokens=[1, 2, 3] + [0] * generated, prompt_len=3, limit=max_tokens,
                            stop_ids=frozenset({8}))


def _block(tokens: list[int]) -> Block:
    return Block(start=0, tokens=tokens, mask_id=MASK, schedule=[], logprobs=[-0.1 * i for i in range(len(tokens))])


def test_block_output_ends_at_the_first_stop_token_and_keeps_it() -> None:
    out = block_output(_req(), _block([4, 5, 8, 6, 8]))
    assert (out.tokens, out.finish_reason, out.stop_reason) == ([4, 5, 8], "stop", 8)
    assert out.logprobs == pytest.approx([0.0, -0.1, -0.2])


def test_block_output_honours_max_tokens_and_min_tokens() -> None:
    assert block_output(_req(max_tokens=6, generated=4), _block([4, 5, 6, 7])) .tokens == [4, 5]
    assert block_output(_req(max_tokens=6, generated=4), _block([4, 5, 6, 7])).finish_reason == "length"
    assert block_output(_req(), _block([4, 5, 6])).finish_reason is None  # the request goes on
    early = block_output(_req(min_tokens=2), _block([8, 4, 8]))  # a stop before min_tokens does not count
    assert (early.tokens, early.finish_reason) == ([8, 4, 8], "stop")


def test_min_tokens_bans_stops_only_in_the_rows_before_it() -> None:
    assert _req(min_tokens=5, generated=2).banned_rows() == 3
    assert _req(min_tokens=2, generated=4).banned_rows() == 0
