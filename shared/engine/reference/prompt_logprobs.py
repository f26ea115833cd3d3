"""Prompt logprobs in prefill: each prompt token's log-probability given the tokens before it.

A prefill chunk's rows `start .. start + n - 1` already hold the final hidden
states; row `p` predicts token `p + 1`. For a sequence that asked
(`OutputOptions.prompt_logprobs`), the runner scores those rows against the
prompt's next tokens (the last prompt row predicts the first output token,
which is sampled as usual, so it is not scored here). The first prompt token
has no logprob (nothing precedes it), as in OpenAI's and vLLM's `echo`.
"""

from __future__ import annotations

from typing import Any

import torch

from protocol.messages import TopLogprob

PromptScores = tuple[list[float], list[list[TopLogprob]] | None]  # logprobs of the targets; top-k per row
ROWS_AT_ONCE = 256  # bounds the logits held at once (256 x a 152k vocabulary in float32: 156 MB)


def prompt_targets(tokens: list[int], prompt_len: int, start: int, num_tokens: int) -> list[int]:
    """The prompt tokens that rows `start .. start + num_tokens - 1` predict (one fewer for the last chunk)."""
    return tokens[start + 1 : min(start + num_tokens + 1, prompt_len)]


def score_rows(model: Any, hidden: torch.Tensor, jobs: list[tuple[int, int, list[int], int]]
               ) -> dict[int, PromptScores]:
    """`jobs`: (item index, first row in `hidden`, targets, top-k) -> per item, the targets' logprobs (float32
    log-softmax of the model's own logits, before any sampling adjustment) and their top-k alternatives."""
    out: dict[int, PromptScores] = {}
    for index, row, targets, k in jobs:
        chosen: list[float] = []
        top: list[list[TopLogprob]] | None = [] if k > 0 else None
        for lo in range(0, len(targets), ROWS_AT_ONCE):  # [rows, vocab] float32 logits, a slice at a time
            part = targets[lo : lo + ROWS_AT_ONCE]
            h = model.model.norm(hidden[row + lo : row + lo + len(part)])
            logprobs = torch.log_softmax(model.lm_head(h).float(), dim=-1)
            ids = torch.tensor(part, device=logprobs.device)
            chosen += logprobs.gather(1, ids[:, None]).squeeze(1).tolist()
            if top is not None:
                vals, idx = logprobs.topk(min(k, logprobs.shape[1]), dim=-1)
                top += [[TopLogprob(t, v) for t, v in zip(ti, vi, strict=True)]
                        for ti, vi in zip(idx.tolist(), vals.tolist(), strict=True)]
        out[index] = (chosen, top)
    return out


class PromptLogprobs:
    """A sequence's prompt logprobs, filled chunk by chunk (a recomputation after preemption overwrites)."""

    __slots__ = ("logprobs", "top", "top_k")

    def __init__(self, prompt_len: int, top_k: int) -> None:
        self.top_k = top_k
        self.logprobs: list[float | None] = [None] * prompt_len
        self.top: list[list[TopLogprob]] | None = [[] for _ in range(prompt_len)] if top_k > 0 else None

    def store(self, start: int, scores: PromptScores) -> None:
        values, top = scores
        self.logprobs[start + 1 : start + 1 + len(values)] = values
        if self.top is not None and top is not None:
            self.top[start + 1 : start + 1 + len(top)] = top
