"""A host-memory tier under a BlockPool: GPU blocks evicted from the pool are copied here (LRU, up to
`capacity` blocks) and copied back into a GPU block when a prompt's prefix needs them, instead of being
recomputed.

Logical bookkeeping only, like the pool: block data moves through a `HostMover` the engine supplies
(the reference engine's copies its per-layer tensors: shared/engine/reference/host_kv.py). Every change
is a KV event with medium "host", so routers see the blocks as host hits (shared.kv.radix).
A block reloaded to GPU keeps its host copy (evicting it again costs no copy).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from protocol.kv_events import BlockRemoved, BlockStored, KvEvent

HOST = "host"


class HostMover(Protocol):
    def save(self, block_id: int, slot: int) -> None:
        """Copy GPU block `block_id` into host slot `slot`."""

    def load(self, slot: int, block_id: int) -> None:
        """Copy host slot `slot` into GPU block `block_id`."""


class HostTier:
    def __init__(self, capacity: int, mover: HostMover, page_size: int) -> None:
        if capacity <= 0:
            raise ValueError("a host tier needs a positive capacity")
        self.capacity = capacity
        self.page_size = page_size
        self._mover = mover
        self._slots: OrderedDict[int, int] = OrderedDict()  # block hash -> host slot, LRU first
        self._free = list(range(capacity - 1, -1, -1))
        self.saved = 0  # blocks copied to host
        self.loaded = 0  # blocks copied back to GPU

    def __contains__(self, h: int) -> bool:
        return h in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def touch(self, hashes: list[int]) -> None:
        """Mark blocks about to be reloaded as most recently used (so saving others does not drop them)."""
        for h in reversed(hashes):
            if h in self._slots:
                self._slots.move_to_end(h)

    def save(self, h: int, block_id: int) -> list[KvEvent]:
        """Keep an evicted GPU block's data; the events saying so (and naming the block it displaced)."""
        if h in self._slots:
            self._slots.move_to_end(h)
            return []
        events: list[KvEvent] = []
        if not self._free:
            old, slot = self._slots.popitem(last=False)
            self._free.append(slot)
            events.append(BlockRemoved(block_hashes=[old], medium=HOST))
        slot = self._free.pop()
        self._mover.save(block_id, slot)
        self._slots[h] = slot
        self.saved += 1
        events.append(BlockStored(block_hashes=[h], token_ids=[], block_size=self.page_size, medium=HOST))
        return events

    def load(self, h: int, block_id: int) -> None:
        """Copy a block back to GPU; its host copy becomes the first to go (the GPU now holds the block)."""
        slot = self._slots[h]
        self._slots.move_to_end(h, last=False)
        self._mover.load(slot, block_id)
        self.loaded += 1

    def clear(self) -> None:
        self._free.extend(self._slots.values())
        self._slots.clear()
