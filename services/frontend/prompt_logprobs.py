"""Completions' `echo` with `logprobs`: the prompt's tokens and log-probabilities ahead of the output's.

The frontend asks the engine (`OutputOptions.prompt_logprobs` = the request's `logprobs`); the engine answers
on its first chunk (the reference engine computes them in prefill, SGLang with `logprob_start_len=0`; the mock
and diffusion engines refuse with a 400). The first prompt token has no logprob (`null`), as in OpenAI's and
vLLM's answers. `max_tokens: 0` (with `echo`) scores the prompt alone, as vLLM accepts for scoring harnesses.
"""

from __future__ import annotations

from protocol.messages import OutputChunk, TopLogprob

PromptRows = tuple[list[int], list[float | None], list[list[TopLogprob] | None]]


def prompt_rows(prompt_ids: list[int], chunk: OutputChunk, top: int) -> PromptRows | None:
    """(token ids, logprobs, top alternatives or None per row) of the prompt, when `chunk` carries them."""
    lps = chunk.prompt_logprobs
    if lps is None:
        return None
    n = min(len(lps), len(prompt_ids))
    tops: list[list[TopLogprob] | None] = [None] * n
    if top > 0 and chunk.prompt_top_logprobs is not None:
        tops = [row[:top] if i > 0 else None for i, row in enumerate(chunk.prompt_top_logprobs[:n])]
        tops += [None] * (n - len(tops))
    return list(prompt_ids[:n]), list(lps[:n]), tops

