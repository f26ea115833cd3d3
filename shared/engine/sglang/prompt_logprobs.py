"""Prompt logprobs from SGLang: asked with `return_logprob` and `logprob_start_len=0`, read from `meta_info`.

SGLang answers `input_token_logprobs` as `[(logprob, token_id, text), ...]`, one per prompt token, the first
one's logprob None (nothing precedes it), and with `top_logprobs_num` also `input_top_logprobs` (per prompt
token, `[(logprob, token_id, text), ...]` or None). Nothing here imports sglang.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from protocol.messages import EngineRequest, TopLogprob


def prompt_logprob_kwargs(req: EngineRequest) -> dict[str, Any]:
    """What `async_generate` needs besides the output's own logprob arguments (empty when not asked)."""
    k = req.output.prompt_logprobs
    if k is None:
        return {}
    kw: dict[str, Any] = {"return_logprob": True, "logprob_start_len": 0}
    top = max(k, req.output.logprobs or 0)  # one top_logprobs_num serves both
    if top > 0:
        kw["top_logprobs_num"] = top
    return kw


def prompt_logprobs_of(meta: dict[str, Any], k: int) -> tuple[list[float | None], list[list[TopLogprob]] | None]:
    """The prompt's logprobs (first None) and, when `k` > 0, its top-`k` alternatives ([] for the first)."""
    entries: Sequence[Any] = meta.get("input_token_logprobs") or ()
    logprobs = [None if e[0] is None else float(e[0]) for e in entries]
    if logprobs:
        logprobs[0] = None
    if k <= 0:
        return logprobs, None
    rows: Sequence[Any] = meta.get("input_top_logprobs") or ()
    top = [[TopLogprob(int(t[1]), float(t[0])) for t in (row or ())[:k] if t[0] is not None] for row in rows]
    if top:
        top[0] = []
    return logprobs, top
