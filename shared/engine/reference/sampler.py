"""Batched token sampling: greedy, temperature, top-k, top-p, min-p, seeds, logprobs, bias and penalties."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from protocol.messages import TopLogprob
from shared.engine.reference.logits import History, adjust_logits
from shared.engine.reference.prompt_logprobs import PromptScores
from shared.engine.reference.sequence import SamplingSpec
from shared.grammar.mask import TokenMask, apply_masks


@dataclass
class SampleOutput:
    tokens: list[int]
    logprobs: list[float] | None  # the chosen tokens' (None when no row asked)
    top: list[list[TopLogprob] | None]  # per row, when that row asked for top-k
    prompt: dict[int, PromptScores] = field(default_factory=dict)  # per step item asking: its prompt logprobs


def sample(logits: torch.Tensor, specs: list[SamplingSpec], banned: list[frozenset[int]],
           histories: list[History | None] | None = None,
           masks: list[TokenMask | None] | None = None) -> SampleOutput:
    """Pick one token per row of `logits` [rows, vocab] (float32); logprobs are the model's, before
    bias, penalties and grammar (as vLLM reports them); rows with a grammar draw only what it allows."""
    want_lp = any(s.logprobs is not None for s in specs)
    logprobs = torch.log_softmax(logits, dim=-1) if want_lp else None
    if masks:
        apply_masks(logits, masks)  # constrained and free rows in one batch
    logits = adjust_logits(logits, specs, histories or [None] * len(specs))
    logits = _suppress(logits, banned)
    tokens = logits.argmax(dim=-1)
    sampled = [i for i, s in enumerate(specs) if not s.greedy]
    if sampled:
        rows = torch.tensor(sampled, device=logits.device)
        tokens[rows] = _sample_rows(logits[rows], [specs[i] for i in sampled])
    token_list = tokens.tolist()
    if logprobs is None:
        return SampleOutput(token_list, None, [None] * len(specs))
    chosen = logprobs.gather(1, tokens[:, None]).squeeze(1).tolist()
    return SampleOutput(token_list, chosen, _top_logprobs(logprobs, specs))


def _suppress(logits: torch.Tensor, banned: list[frozenset[int]]) -> torch.Tensor:
    if not any(banned):
        return logits
    logits = logits.clone()
    vocab = logits.shape[1]
    for i, ids in enumerate(banned):
        inside = [t for t in ids if 0 <= t < vocab]  # the engine refuses others; never index past the row
        if inside:
            logits[i, inside] = float("-inf")
    return logits


def _sample_rows(logits: torch.Tensor, specs: list[SamplingSpec]) -> torch.Tensor:
    """Temperature, then top-k / top-p / min-p over the sorted distribution, then a draw."""
    dev = logits.device
    temp = torch.tensor([s.temperature for s in specs], device=dev)
    sorted_logits, order = torch.sort(logits / temp[:, None], dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    rank = torch.arange(probs.shape[1], device=dev)[None, :]
    top_k = torch.tensor([s.top_k if s.top_k > 0 else probs.shape[1] for s in specs], device=dev)
    top_p = torch.tensor([s.top_p for s in specs], device=dev)
    min_p = torch.tensor([s.min_p for s in specs], device=dev)
    drop = rank >= top_k[:, None]
    drop |= (probs.cumsum(dim=-1) - probs) >= top_p[:, None]  # keep the smallest prefix reaching top_p
    drop |= probs < min_p[:, None] * probs[:, :1]
    drop[:, 0] = False  # the most likely token always survives
    probs = probs.masked_fill(drop, 0.0)
    picked = _draw(probs, [s.generator for s in specs])
    return order.gather(1, picked[:, None]).squeeze(1)


def _draw(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One draw per row (exponential race); seeded rows use their own generator."""
    noise = torch.empty_like(probs).exponential_()
    for i, g in enumerate(generators):
        if g is not None:
            noise[i] = torch.empty_like(probs[i]).exponential_(generator=g)
    return (probs / noise).argmax(dim=-1)


def _top_logprobs(logprobs: torch.Tensor, specs: list[SamplingSpec]) -> list[list[TopLogprob] | None]:
    k = max((s.logprobs or 0) for s in specs)
    if k == 0:
        return [None] * len(specs)
    vals, ids = logprobs.topk(min(k, logprobs.shape[1]), dim=-1)
    vals_l, ids_l = vals.tolist(), ids.tolist()
    out: list[list[TopLogprob] | None] = []
    for i, s in enumerate(specs):
        n = s.logprobs or 0
        out.append([TopLogprob(t, lp) for t, lp in zip(ids_l[i][:n], vals_l[i][:n], strict=True)] if n else None)
    return out
