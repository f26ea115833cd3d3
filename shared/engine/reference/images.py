"""Image embeddings inside the reference engine: checked onto a sequence, cut per prefill chunk."""

from __future__ import annotations

from typing import Any

import torch

from protocol.messages import ErrorCode
from shared.engine.base import EngineError
from shared.engine.reference.sequence import Sequence


def attach_images(seq: Sequence, embeds: list[torch.Tensor] | None, runner: Any, required: bool) -> None:
    """Put each image's embeddings at its offset in the prompt; `required`: a request with images
    must bring them (not so when its prompt's KV was computed elsewhere)."""
    req = seq.request
    if not req.multimodal:
        return
    if embeds is None:
        if required:
            raise EngineError(ErrorCode.BAD_REQUEST, "the request's images were not encoded")
        return
    if len(embeds) != len(req.multimodal):
        raise EngineError(ErrorCode.BAD_REQUEST, f"{len(embeds)} image embeddings for {len(req.multimodal)} images")
    hidden = runner.hf_config.hidden_size
    for item, emb in zip(req.multimodal, embeds, strict=True):
        if item.offset < 0 or item.offset + item.num_tokens > seq.prompt_len:
            raise EngineError(ErrorCode.BAD_REQUEST, "image placeholder out of the prompt (not expanded?)")
        if tuple(emb.shape) != (item.num_tokens, hidden):
            raise EngineError(ErrorCode.BAD_REQUEST, f"image embeddings of shape {tuple(emb.shape)}, expected "
                              f"{(item.num_tokens, hidden)}")
        seq.mm.append((item.offset, emb.to(runner.device, runner.dtype)))


def chunk_embeds(seq: Sequence, start: int, end: int) -> list[tuple[int, torch.Tensor]]:
    """`(row in the chunk, embeddings)` of every image overlapping prompt positions [start, end)."""
    out: list[tuple[int, torch.Tensor]] = []
    for off, emb in seq.mm:
        lo, hi = max(off, start), min(off + emb.shape[0], end)
        if lo < hi:
            out.append((lo - start, emb[lo - off : hi - off]))
    return out


def images_missing(seq: Sequence, start: int, end: int) -> bool:
    """Whether computing prompt positions [start, end) needs image embeddings the sequence lacks (its KV
    was imported without them, then preempted): such a chunk would embed pad ids, not images."""
    if seq.mm or not seq.request.multimodal:
        return False
    return any(item.offset < end and item.offset + item.num_tokens > start for item in seq.request.multimodal)
