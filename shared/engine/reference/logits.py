"""Logit adjustments before sampling: OpenAI's logit_bias and the three repetition penalties.

`repetition_penalty` is applied as transformers' RepetitionPenaltyLogitsProcessor does (every token
seen in prompt or output: a positive logit is divided by it, a negative one multiplied);
`frequency_penalty` and `presence_penalty` as OpenAI defines them over the output tokens
(logit -= frequency * count + presence * (count > 0)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shared.engine.reference.sequence import SamplingSpec

History = tuple[Sequence[int], int]  # (every token so far, how many of them are the prompt)


def adjust_logits(logits: torch.Tensor, specs: list[SamplingSpec], histories: list[History | None]) -> torch.Tensor:
    """`logits` [rows, vocab] with each row's bias and penalties applied (a copy when any applies)."""
    if not any(s.adjusts for s in specs):
        return logits
    logits = logits.clone()
    for i, (spec, history) in enumerate(zip(specs, histories, strict=True)):
        if spec.adjusts:
            _adjust_row(logits[i], spec, history or ((), 0))
    return logits


def _adjust_row(row: torch.Tensor, spec: SamplingSpec, history: History) -> None:
    tokens, prompt_len = history
    vocab = row.shape[0]
    if spec.repetition_penalty != 1.0 and tokens:
        seen = torch.tensor(sorted({t for t in tokens if t < vocab}), device=row.device, dtype=torch.long)
        score = row[seen]
        row[seen] = torch.where(score < 0, score * spec.repetition_penalty, score / spec.repetition_penalty)
    output = [t for t in tokens[prompt_len:] if t < vocab]
    if (spec.frequency_penalty or spec.presence_penalty) and output:
        counts = torch.bincount(torch.tensor(output, device=row.device), minlength=vocab).to(row.dtype)
        row -= spec.frequency_penalty * counts + spec.presence_penalty * (counts > 0).to(row.dtype)
    if spec.logit_bias:
        ids = [t for t in spec.logit_bias if 0 <= t < vocab]
        row[ids] += torch.tensor([spec.logit_bias[t] for t in ids], device=row.device, dtype=row.dtype)
