"""Which worker holds which KV block: an index over chained block hashes.

A block hash chains on its parent's, so one hash names a whole prefix and the
radix tree over token blocks collapses into a map: hash -> workers holding it.
The overlap of a request with each worker is the length of the leading run of
the request's hashes that worker holds; the walk narrows the set of workers
still matching and stops when it is empty, so workers holding nothing of the
prompt cost nothing.

Every worker publishes shoal's own block hashes (`shared.kv.hashing`): an
engine that names blocks otherwise (SGLang) is translated once, on its worker
(shared/engine/sglang/translate.py), so the index sees one kind of worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent

WorkerKey = tuple[str, int]  # (instance id, data-parallel rank)


class KvIndex:
    def __init__(self, page_size: int = 16) -> None:
        self.page_size = page_size
        self._holders: dict[int, set[WorkerKey]] = {}
        self._held: dict[WorkerKey, set[int]] = {}

    # ---- updates ------------------------------------------------------------------------
    def apply(self, worker: WorkerKey, event: KvEvent) -> None:
        if isinstance(event, BlockStored):
            self._stored(worker, event.block_hashes)
        elif isinstance(event, BlockRemoved):
            self._removed(worker, event.block_hashes)
        elif isinstance(event, AllBlocksCleared):
            self.remove_worker(worker)

    def _stored(self, worker: WorkerKey, hashes: Sequence[int]) -> None:
        held = self._held.setdefault(worker, set())
        holders = self._holders
        for h in hashes:
            s = holders.get(h)
            if s is None:
                holders[h] = {worker}
            else:
                s.add(worker)
        held.update(hashes)

    def _removed(self, worker: WorkerKey, hashes: Sequence[int]) -> None:
        held = self._held.get(worker)
        if held is None:
            return
        for h in hashes:
            held.discard(h)
            s = self._holders.get(h)
            if s is not None:
                s.discard(worker)
                if not s:
                    del self._holders[h]

    def remove_worker(self, worker: WorkerKey) -> None:
        """Forget everything a worker holds (cleared cache, lease expired, events lost)."""
        for h in self._held.pop(worker, ()):
            s = self._holders.get(h)
            if s is not None:
                s.discard(worker)
                if not s:
                    del self._holders[h]

    def remove_instance(self, instance_id: str) -> None:
        for w in [w for w in self._held if w[0] == instance_id]:
            self.remove_worker(w)

    # ---- queries ------------------------------------------------------------------------
    def overlaps(self, hashes: Sequence[int]) -> dict[WorkerKey, int]:
        """Leading blocks of `hashes` each worker holds (workers holding none are absent)."""
        if not hashes:
            return {}
        first = self._holders.get(hashes[0])
        if not first:
            return {}
        active = set(first)
        depth: dict[WorkerKey, int] = {}
        i = 1
        while i < len(hashes):
            holders = self._holders.get(hashes[i])
            if not holders:
                break
            dropped = active - holders
            if dropped:
                for w in dropped:
                    depth[w] = i
                active -= dropped
                if not active:
                    return depth
            i += 1
        for w in active:
            depth[w] = i
        return depth

    @property
    def num_blocks(self) -> int:
        return len(self._holders)

    def blocks_of(self, worker: WorkerKey) -> int:
        return len(self._held.get(worker, ()))

    def workers(self) -> list[WorkerKey]:
        return list(self._held)
