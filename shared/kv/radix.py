"""Which worker holds which KV block: an index over chained block hashes.

A block hash chains on its parent's, so one hash names a whole prefix and the
radix tree over token blocks collapses into a map: hash -> workers holding it.
The overlap of a request with each worker is the length of the leading run of
the request's hashes that worker holds; the walk narrows the set of workers
still matching (a bit mask: one `&` per block) and stops when it is empty, so
workers holding nothing of the prompt cost nothing.

Every worker publishes shoal's own block hashes (`shared.kv.hashing`): an
engine that names blocks otherwise (SGLang) is translated once, on its worker
(shared/engine/sglang/translate.py), so the index sees one kind of worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.discovery import DEFAULT_PAGE_SIZE
from protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent

WorkerKey = tuple[str, int]  # (instance id, data-parallel rank)


class KvIndex:
    """hash -> the workers holding it, as a bit mask over worker slots (one int per block: narrowing the
    set of matching workers along a prompt is one `&` per block, and a million blocks stay small)."""

    def __init__(self, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.page_size = page_size
        self._holders: dict[int, int] = {}  # block hash -> mask of the slots of the workers holding it
        self._held: dict[WorkerKey, set[int]] = {}
        self._slot: dict[WorkerKey, int] = {}
        self._keys: list[WorkerKey | None] = []  # slot -> worker
        self._free: list[int] = []

    # ---- updates ------------------------------------------------------------------------
    def apply(self, worker: WorkerKey, event: KvEvent) -> None:
        if isinstance(event, BlockStored):
            self._stored(worker, event.block_hashes)
        elif isinstance(event, BlockRemoved):
            self._removed(worker, event.block_hashes)
        elif isinstance(event, AllBlocksCleared):
            self.remove_worker(worker)

    def _bit(self, worker: WorkerKey) -> int:
        slot = self._slot.get(worker)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._keys[slot] = worker
            else:
                slot = len(self._keys)
                self._keys.append(worker)
            self._slot[worker] = slot
        return 1 << slot

    def _stored(self, worker: WorkerKey, hashes: Sequence[int]) -> None:
        bit = self._bit(worker)
        held = self._held.setdefault(worker, set())
        holders = self._holders
        for h in hashes:
            holders[h] = holders.get(h, 0) | bit
        held.update(hashes)

    def _removed(self, worker: WorkerKey, hashes: Sequence[int]) -> None:
        held = self._held.get(worker)
        if held is None:
            return
        for h in hashes:
            if h in held:
                held.discard(h)
                self._unset(h, 1 << self._slot[worker])

    def _unset(self, h: int, bit: int) -> None:
        left = self._holders[h] & ~bit
        if left:
            self._holders[h] = left
        else:
            del self._holders[h]

    def remove_worker(self, worker: WorkerKey) -> None:
        """Forget everything a worker holds (cleared cache, lease expired, events lost)."""
        held = self._held.pop(worker, None)
        slot = self._slot.pop(worker, None)
        if slot is None:
            return
        for h in held or ():
            self._unset(h, 1 << slot)
        self._keys[slot] = None
        self._free.append(slot)

    def remove_instance(self, instance_id: str) -> None:
        for w in [w for w in self._held if w[0] == instance_id]:
            self.remove_worker(w)

    # ---- queries ------------------------------------------------------------------------
    def overlaps(self, hashes: Sequence[int]) -> dict[WorkerKey, int]:
        """Leading blocks of `hashes` each worker holds (workers holding none are absent)."""
        holders = self._holders
        active = holders.get(hashes[0], 0) if hashes else 0
        depth: dict[WorkerKey, int] = {}
        for i in range(1, len(hashes)):
            if not active:
                return depth
            still = active & holders.get(hashes[i], 0)
            if still != active:
                self._settle(active & ~still, i, depth)
                active = still
        self._settle(active, len(hashes), depth)
        return depth

    def _settle(self, mask: int, n: int, depth: dict[WorkerKey, int]) -> None:
        """Record a match of `n` blocks for every worker in `mask`."""
        keys = self._keys
        while mask:
            low = mask & -mask
            depth[keys[low.bit_length() - 1]] = n
            mask ^= low

    @property
    def num_blocks(self) -> int:
        return len(self._holders)

    def blocks_of(self, worker: WorkerKey) -> int:
        return len(self._held.get(worker, ()))

    def workers(self) -> list[WorkerKey]:
        return list(self._held)
