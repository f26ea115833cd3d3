"""Low-confidence remasking (LLaDA; SGLang's `LowConfidence` dLLM algorithm), one block at a time.

A block of `block_length` positions starts all masked. Each iteration the model
predicts every position of the sequence at once (bidirectional attention); for
the block's still-masked positions this module picks a token per position
(argmax, or a temperature draw) and its confidence (the model's probability of
that token), then commits:

- the k most confident predictions, k from `transfer_schedule` (LLaDA:
  `block_length / steps` per iteration, the remainder spread over the first
  iterations), or
- with a `threshold`: every prediction more confident than it, and at least
  the single most confident one (SGLang's LowConfidence; Fast-dLLM).

The mask token itself is never predicted. Every other position stays masked ("remasked") and is predicted again in the
next iteration, now seeing the tokens committed so far. Pure tensor code, no
model and no engine state: the engine calls `unmask_step` once per block per
iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def transfer_schedule(num_masked: int, steps: int) -> list[int]:
    """Tokens committed at each iteration: sums to `num_masked`, earlier iterations take the remainder.

    `steps` is clamped to `num_masked`, so that every iteration commits at least one token.
    """
    if num_masked <= 0:
        return []
    steps = max(1, min(steps, num_masked))
    base, extra = divmod(num_masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


@dataclass
class Block:
    """One block being denoised: its tokens (mask id where still masked) and the iteration count."""

    start: int  # the block's first position in the sequence
    tokens: list[int]
    mask_id: int
    schedule: list[int]  # tokens to commit per iteration (unused with a threshold)
    iteration: int = 0
    logprobs: list[float] = field(default_factory=list)  # per position, set when committed

    @classmethod
    def new(cls, start: int, length: int, mask_id: int, steps: int) -> Block:
        return cls(start, [mask_id] * length, mask_id, transfer_schedule(length, steps), 0, [0.0] * length)

    @property
    def masked(self) -> list[int]:
        """Offsets (within the block) still masked."""
        return [i for i, t in enumerate(self.tokens) if t == self.mask_id]

    @property
    def done(self) -> bool:
        return self.mask_id not in self.tokens

    def k(self) -> int:
        """How many to commit this iteration (when no threshold is set)."""
        i = min(self.iteration, len(self.schedule) - 1)
        return self.schedule[i] if self.schedule else 0

    def commit(self, commit: Commit) -> None:
        for pos, tok, lp in zip(commit.positions, commit.tokens, commit.logprobs, strict=True):
            if self.tokens[pos] != self.mask_id:
                raise ValueError(f"position {pos} of the block is already committed")
            self.tokens[pos] = tok
            self.logprobs[pos] = lp
        self.iteration += 1


@dataclass(frozen=True)
class Commit:
    """What one iteration unmasks: block offsets, their tokens, and the tokens' log-probabilities."""

    positions: list[int]
    tokens: list[int]
    logprobs: list[float]


def unmask_step(logits: torch.Tensor, block: list[int], mask_id: int, *, k: int, threshold: float | None = None,
                temperature: float = 0.0, generator: torch.Generator | None = None,
                banned: list[int] | None = None, banned_rows: int = 0) -> Commit:
    """Pick the positions of `block` to unmask this iteration, from its logits `[len(block), vocab]`.

    The mask token itself is never predicted (a committed position must stop being masked).
    `banned` ids may not be predicted at the first `banned_rows` offsets (min_tokens keeps
    stop tokens out of the first positions of the output). Ties go to the lower offset.
    """
    logits = logits.float().clone()
    logits[:, mask_id] = float("-inf")
    if banned and banned_rows > 0:
        logits[:banned_rows, banned] = float("-inf")
    masked = torch.tensor([t == mask_id for t in block], device=logits.device)
    if not bool(masked.any()):
        return Commit([], [], [])
    logp = torch.log_softmax(logits, dim=-1)
    tokens = _predict(logits, temperature, generator)
    chosen = logp.gather(1, tokens[:, None]).squeeze(1)
    conf = torch.where(masked, chosen.exp(), torch.tensor(-1.0, device=logits.device))
    if threshold is not None:
        pick = (conf > threshold) & masked
        if not bool(pick.any()):
            pick[int(torch.argmax(conf))] = True
        positions = torch.nonzero(pick).flatten().tolist()
    else:
        n = max(1, min(k, int(masked.sum())))
        c = conf.tolist()
        positions = sorted(sorted(range(len(block)), key=lambda i: -c[i])[:n])  # stable: ties by offset
    return Commit(positions, [int(tokens[i]) for i in positions], [float(chosen[i]) for i in positions])


def _predict(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Argmax per row, or one draw per row from softmax(logits / temperature) (exponential race)."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1)
