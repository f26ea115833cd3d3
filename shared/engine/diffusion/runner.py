"""One denoising iteration for a batch of requests: one forward, then each one's unmasking (model thread)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shared.engine.diffusion.model import BidirectionalLM, Row
from shared.engine.diffusion.unmask import Commit, unmask_step


@dataclass(frozen=True)
class StepItem:
    """A snapshot of one request for one iteration (copies: the loop may change the request meanwhile)."""

    token_ids: list[int]  # committed tokens, then the current block (masks included)
    block_start: int
    block: list[int]
    k: int
    threshold: float | None
    temperature: float
    generator: torch.Generator | None
    banned: list[int]
    banned_rows: int


def denoise(model: BidirectionalLM, items: list[StepItem], mask_id: int) -> list[Commit]:
    """Predict every item's block in one batched forward; pick what each item unmasks."""
    logits = model.span_logits([Row(it.token_ids, it.block_start, len(it.block)) for it in items])
    return [unmask_step(lg, it.block, mask_id, k=it.k, threshold=it.threshold, temperature=it.temperature,
                        generator=it.generator, banned=it.banned, banned_rows=it.banned_rows)
            for it, lg in zip(items, logits, strict=True)]
