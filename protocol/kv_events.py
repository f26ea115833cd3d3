"""KV cache events and worker load, published by workers for routers."""

from __future__ import annotations

import msgspec

# Where a cached block lives: the engine's GPU memory, host (CPU) memory, or storage (SGLang's HiCache tiers).
# Events without a medium (older workers) are GPU events.
TIERS = ("gpu", "host", "storage")


class BlockStored(msgspec.Struct, frozen=True, tag="stored", omit_defaults=True):
    """Full blocks now cached, in order; each block's hash chains on its parent's."""

    block_hashes: list[int]
    token_ids: list[int]  # block_size tokens per block, concatenated
    parent_hash: int | None = None
    block_size: int = 16
    medium: str = "gpu"  # one of TIERS


class BlockRemoved(msgspec.Struct, frozen=True, tag="removed", omit_defaults=True):
    block_hashes: list[int]
    medium: str = "gpu"  # the tier the blocks left (a copy in another tier stays)


class AllBlocksCleared(msgspec.Struct, frozen=True, tag="cleared"):
    pass


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


class KvEventBatch(msgspec.Struct, frozen=True, omit_defaults=True):
    worker_id: str
    seq: int  # per worker, consecutive from 1; a gap means events were lost
    events: list[KvEvent]
    dp_rank: int = 0
    ts: float = 0.0


class WorkerLoad(msgspec.Struct, frozen=True, omit_defaults=True):
    worker_id: str
    running: int = 0
    waiting: int = 0
    kv_used_blocks: int = 0
    kv_total_blocks: int = 0
    prefill_tokens: int = 0  # prompt tokens of the waiting requests: prefill work queued
    dp_rank: int = 0
    ts: float = 0.0
