"""The reference engine's host KV tier: per-layer CPU tensors shaped like the GPU cache, `capacity` blocks.

Moves whole blocks between the engine's KvCache and host memory for shared.kv.host_tier (pinned memory
when the cache is on CUDA, so the copies are plain DMA).
"""

from __future__ import annotations

import torch

from shared.engine.reference.kv_cache import KvCache


class HostKv:
    def __init__(self, kv: KvCache, capacity: int) -> None:
        self.kv = kv
        pin = kv.tensors[0].is_cuda
        self.tensors = [torch.empty((capacity, *t.shape[1:]), dtype=t.dtype, device="cpu", pin_memory=pin)
                        for t in kv.tensors]

    def save(self, block_id: int, slot: int) -> None:
        for host, gpu in zip(self.tensors, self.kv.tensors, strict=True):
            host[slot].copy_(gpu[block_id])

    def load(self, slot: int, block_id: int) -> None:
        for host, gpu in zip(self.tensors, self.kv.tensors, strict=True):
            gpu[block_id].copy_(host[slot])
