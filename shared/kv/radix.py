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

Tiers: a worker may hold a block in GPU memory, host memory or storage (the
event's `medium`); each tier has its own map hash -> mask. A block held in
several tiers counts at the best one. `tier_depths` walks the three nested
unions (gpu; gpu or host; any tier) at once: eviction moves a prefix's tail
down first, so a worker's matching run is GPU blocks, then host blocks, then
storage blocks, and three depths describe it. While no worker reports a
lower tier, `overlaps` (one mask per block) is all a decision costs.

`match` is what the router's decision calls: the same walks, but it records
only where groups of workers drop out (a mask and a depth each) and returns
disjoint groups (slot mask, blocks matched, weighted worth); nothing is built
per worker, so 32 workers matching cost what a few groups cost.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.discovery import DEFAULT_PAGE_SIZE
from protocol.kv_events import TIERS, AllBlocksCleared, BlockRemoved, BlockStored, KvEvent

WorkerKey = tuple[str, int]  # (instance id, data-parallel rank)
TIER_INDEX = {name: i for i, name in enumerate(TIERS)}  # gpu 0, host 1, storage 2


class KvIndex:
    """hash -> the workers holding it, as a bit mask over worker slots (one int per block: narrowing the
    set of matching workers along a prompt is one `&` per block, and a million blocks stay small)."""

    def __init__(self, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.page_size = page_size
        self._masks: list[dict[int, int]] = [{} for _ in TIERS]  # per tier: block hash -> mask of slots
        self._holders = self._masks[0]  # GPU
        self._held: list[dict[WorkerKey, set[int]]] = [{} for _ in TIERS]  # per tier: worker -> its hashes
        self._slot: dict[WorkerKey, int] = {}
        self._keys: list[WorkerKey | None] = []  # slot -> worker
        self._bits: list[int] = []  # slot -> 1 << slot, one int object shared by every block only that slot holds
        self._bits_of: dict[str, int] = {}  # instance -> mask of its slots (its DP ranks)
        self._free: list[int] = []
        self.unknown_media = 0  # events naming no known tier (ignored)

    # ---- updates ------------------------------------------------------------------------
    def apply(self, worker: WorkerKey, event: KvEvent) -> None:
        if isinstance(event, AllBlocksCleared):
            self.remove_worker(worker)
            return
        tier = TIER_INDEX.get(event.medium)
        if tier is None:
            self.unknown_media += 1
        elif isinstance(event, BlockStored):
            self._stored(worker, event.block_hashes, tier)
        elif isinstance(event, BlockRemoved):
            self._removed(worker, event.block_hashes, tier)

    def _bit(self, worker: WorkerKey) -> int:
        slot = self._slot.get(worker)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._keys[slot] = worker
            else:
                slot = len(self._keys)
                self._keys.append(worker)
                self._bits.append(1 << slot)
            self._slot[worker] = slot
            self._bits_of[worker[0]] = self._bits_of.get(worker[0], 0) | 1 << slot
        return self._bits[slot]

    def _stored(self, worker: WorkerKey, hashes: Sequence[int], tier: int = 0) -> None:
        bit = self._bit(worker)
        held = self._held[tier].setdefault(worker, set())
        holders = self._masks[tier]
        get = holders.get
        for h in hashes:
            old = get(h)
            if old is None:
                holders[h] = bit  # the slot's own int: a block held by one worker costs no int of its own
            elif not old & bit:
                holders[h] = old | bit
        held.update(hashes)

    def _removed(self, worker: WorkerKey, hashes: Sequence[int], tier: int = 0) -> None:
        held = self._held[tier].get(worker)
        if held is None:
            return
        bit = 1 << self._slot[worker]
        for h in hashes:
            if h in held:
                held.discard(h)
                self._unset(self._masks[tier], h, bit)

    def _unset(self, holders: dict[int, int], h: int, bit: int) -> None:
        left = holders[h] & ~bit
        if not left:
            del holders[h]
        elif left & (left - 1):
            holders[h] = left
        else:  # one holder left: its shared int
            holders[h] = self._bits[left.bit_length() - 1]

    def remove_worker(self, worker: WorkerKey) -> None:
        """Forget everything a worker holds, in every tier (cleared cache, lease expired, events lost)."""
        slot = self._slot.pop(worker, None)
        if slot is None:
            return
        for holders, held in zip(self._masks, self._held, strict=True):
            for h in held.pop(worker, None) or ():
                self._unset(holders, h, 1 << slot)
        self._keys[slot] = None
        self._free.append(slot)
        left = self._bits_of.pop(worker[0], 0) & ~(1 << slot)
        if left:
            self._bits_of[worker[0]] = left

    def remove_instance(self, instance_id: str) -> None:
        for w in [w for w in self._slot if w[0] == instance_id]:
            self.remove_worker(w)

    # ---- queries ------------------------------------------------------------------------
    @property
    def tiered(self) -> bool:
        """Whether any worker holds a block outside GPU memory now."""
        return bool(self._masks[1] or self._masks[2])

    def overlaps(self, hashes: Sequence[int]) -> dict[WorkerKey, int]:
        """Leading blocks of `hashes` each worker holds on GPU (workers holding none are absent)."""
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

    def tier_depths(self, hashes: Sequence[int]) -> dict[WorkerKey, tuple[int, int, int]]:
        """Per worker holding the first block in some tier: the leading blocks of `hashes` it holds on GPU,
        on GPU or host, and in any tier."""
        gpu, host, storage = self._masks
        if not hashes:
            return {}
        h = hashes[0]
        a_g = gpu.get(h, 0)
        a_gh = a_g | host.get(h, 0)
        a_all = a_gh | storage.get(h, 0)
        d_g: dict[WorkerKey, int] = {}
        d_gh: dict[WorkerKey, int] = {}
        d_all: dict[WorkerKey, int] = {}
        settle = self._settle
        for i in range(1, len(hashes)):
            if not a_all:
                break
            h = hashes[i]
            g = gpu.get(h, 0)
            gh = g | host.get(h, 0)
            still = a_all & (gh | storage.get(h, 0))
            if still != a_all:
                settle(a_all & ~still, i, d_all)
                a_all = still
            if a_gh and a_gh & gh != a_gh:
                settle(a_gh & ~gh, i, d_gh)
                a_gh &= gh
            if a_g and a_g & g != a_g:
                settle(a_g & ~g, i, d_g)
                a_g &= g
        else:
            n = len(hashes)
            settle(a_all, n, d_all)
            settle(a_gh, n, d_gh)
            settle(a_g, n, d_g)
        return {w: (d_g.get(w, 0), d_gh.get(w, 0), n) for w, n in d_all.items()}

    def match(self, hashes: Sequence[int], weights: tuple[float, float, float], within: int = -1
              ) -> list[tuple[int, int, float]]:
        """The router's question, grouped: disjoint (slot mask, leading blocks cached, weighted worth) for the
        workers holding the first block. The same numbers as `overlaps` (its depth n, worth n * w_gpu) while no
        worker holds a block outside GPU or no lower tier weighs, else each worker's `tier_depths` weighted
        (tiers.cached_score; storage only where storage blocks weigh); workers dropping out at
        the same block share a group (`slot_keys` names a mask's workers). `within`: only these slots (a mask;
        -1: all), e.g. the one instance a session sticks to."""
        if not hashes:
            return []
        gpu, host, storage = self._masks
        wg, wh, ws = weights
        if not (host or storage) or wh == ws == 0:
            return self._match_gpu(hashes, wg, within)
        if storage and ws > 0:
            slot = self._slot
            return [(1 << slot[w], a, wg * g + wh * (gh - g) + ws * (a - gh))
                    for w, (g, gh, a) in self.tier_depths(hashes).items() if 1 << slot[w] & within]
        h = hashes[0]
        a_g = gpu.get(h, 0) & within
        a_gh = a_g | host.get(h, 0) & within
        if not a_gh:
            return []
        drops_g: list[tuple[int, int]] = []
        drops_gh: list[tuple[int, int]] = []
        n = len(hashes)
        for i in range(1, n):
            h = hashes[i]
            g = gpu.get(h, 0)
            if g & a_gh == a_gh:  # every worker still matching holds it on GPU (a_g too: it is within a_gh)
                continue
            gh = a_gh & (g | host.get(h, 0))
            if gh != a_gh:
                drops_gh.append((a_gh ^ gh, i))
                a_gh = gh
            if a_g:
                g &= a_g
                if g != a_g:
                    drops_g.append((a_g ^ g, i))
                    a_g = g
            if not a_gh:  # a_g is within a_gh: nobody matches further
                break
        else:
            drops_gh.append((a_gh, n))
            if a_g:
                drops_g.append((a_g, n))
        c_g = wg - wh
        out = []
        for mask, d in drops_gh:  # each worker's (gpu depth, gpu-or-host depth): the two drops it is in
            for m_g, e in drops_g:
                both = mask & m_g
                if both:
                    out.append((both, d, c_g * e + wh * d))
                    mask ^= both
            if mask:
                out.append((mask, d, c_g * 0 + wh * d))
        return out

    def _match_gpu(self, hashes: Sequence[int], w: float, within: int) -> list[tuple[int, int, float]]:
        holders = self._holders
        active = holders.get(hashes[0], 0) & within
        if not active:
            return []
        out = []
        for i in range(1, len(hashes)):
            still = active & holders.get(hashes[i], 0)
            if still != active:
                out.append((active ^ still, i, i * w if w != 1 else i))
                if not still:
                    return out
                active = still
        n = len(hashes)
        out.append((active, n, n * w if w != 1 else n))
        return out

    @property
    def slot_keys(self) -> list[WorkerKey | None]:
        """Slot -> worker (bit i of a `match` mask is slot i)."""
        return self._keys

    def bits_of(self, instance_id: str) -> int:
        """The mask of an instance's slots (one per DP rank it reported blocks for)."""
        return self._bits_of.get(instance_id, 0)

    @property
    def entries(self) -> int:
        """Blocks indexed, counting a block once per tier holding it (what the index's memory grows with)."""
        return sum(len(m) for m in self._masks)

    def _settle(self, mask: int, n: int, depth: dict[WorkerKey, int]) -> None:
        """Record a match of `n` blocks for every worker in `mask`."""
        keys = self._keys
        while mask:
            low = mask & -mask
            depth[keys[low.bit_length() - 1]] = n
            mask ^= low

    @property
    def num_blocks(self) -> int:
        """Distinct blocks on some worker's GPU."""
        return len(self._holders)

    def blocks_of(self, worker: WorkerKey, tier: str = "gpu") -> int:
        return len(self._held[TIER_INDEX[tier]].get(worker, ()))

    def workers(self) -> list[WorkerKey]:
        return list(self._slot)
