"""KV-aware routing: send a request where its prefix is cached, balanced against load.

cost(worker) = overlap_weight * (prompt blocks - weighted blocks cached there)
             + active blocks on the worker (requests it is serving, from its own
               reports and from what this router sent it since)
A cached block weighs by the tier holding it (`tier_weights`: GPU, host memory,
storage; shared.routing.tiers). The cheapest worker wins (ties broken at random); with a temperature > 0 the
choice is a softmax over -cost / temperature instead.

Negative token ids stand for prompt parts whose KV the workers' events cannot show
the router yet (an image before the worker has expanded it: see
shared.routing.opaque). Such a prompt is also matched against where this router
sent earlier prompts (kept `approximate_ttl` seconds), so a conversation about an
image returns to the worker that holds it.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import add

from protocol.discovery import DEFAULT_PAGE_SIZE
from protocol.kv_events import BlockRemoved, BlockStored, KvEventBatch, WorkerLoad
from shared.kv.hashing import has_negative, lora_root, pack_tokens, packed_block_hashes
from shared.kv.radix import KvIndex
from shared.routing.base import RouteDecision, Router
from shared.routing.tiers import GPU_ONLY, TierWeights
from shared.telemetry.metrics import counter, histogram

DECISIONS = counter("shoal_router_decisions_total", "Routing decisions", ["mode"])
_KV_DECISIONS = DECISIONS.labels("kv")
HIT_BLOCKS = counter("shoal_router_hit_blocks_total", "Prompt blocks found cached on the chosen worker", [])
PROMPT_BLOCKS = counter("shoal_router_prompt_blocks_total", "Prompt blocks routed", [])
DECISION_TIME = histogram("shoal_router_decision_seconds", "Time to choose a worker", [],
                          buckets=(1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2))


@dataclass
class _Routed:
    instance_id: str
    blocks: int


class KvRouter(Router):
    mode = "kv"

    def __init__(self, page_size: int = DEFAULT_PAGE_SIZE, overlap_weight: float = 1.0, temperature: float = 0.0,
                 approximate: bool = False, approximate_ttl: float = 120.0, seed: int | None = None,
                 tier_weights: TierWeights = GPU_ONLY) -> None:
        self.page_size = page_size
        self.tier_weights = tier_weights
        self.overlap_weight = overlap_weight
        self.temperature = temperature
        self.approximate = approximate
        self.approximate_ttl = approximate_ttl
        self.index = KvIndex(page_size)
        self._rng = random.Random(seed)
        self._routed: dict[str, _Routed] = {}
        self._active: dict[str, int] = {}  # blocks of requests this router sent, by instance
        self._reported: dict[str, WorkerLoad] = {}
        self._loads: dict[str, float] = {}  # _load of each instance, kept as its inputs change
        self._last_seq: dict[str, dict[int, int]] = {}  # instance -> DP rank -> last batch applied
        self._predicted: deque[tuple[float, str, list[int]]] = deque()  # approximate mode: expiry order
        self._guessed = KvIndex(page_size)  # prompts with opaque parts: where this router sent them
        self._guesses: deque[tuple[float, str, list[int]]] = deque()
        self.live: set[str] = set()

    # ---- membership -----------------------------------------------------------------------
    def add_instance(self, instance_id: str) -> None:
        self.live.add(instance_id)

    def remove_instance(self, instance_id: str) -> None:
        self.live.discard(instance_id)
        self.index.remove_instance(instance_id)
        self._guessed.remove_instance(instance_id)
        self._active.pop(instance_id, None)
        self._reported.pop(instance_id, None)
        self._loads.pop(instance_id, None)
        self._last_seq.pop(instance_id, None)

    # ---- inputs ---------------------------------------------------------------------------
    def apply_batch(self, batch: KvEventBatch) -> bool:
        """Apply one worker's batch in order; False if it was a duplicate (replay/reconnect)."""
        key = (batch.worker_id, batch.dp_rank)
        seqs = self._last_seq.setdefault(batch.worker_id, {})
        last = seqs.get(batch.dp_rank, 0)
        if batch.seq <= last:
            return False
        if last and batch.seq > last + 1:  # events were lost: what we know of this worker is stale
            self.index.remove_worker(key)
        seqs[batch.dp_rank] = batch.seq
        for ev in batch.events:
            self.index.apply(key, ev)
        return True

    def apply_load(self, load: WorkerLoad) -> None:
        self._reported[load.worker_id] = load
        self._update_load(load.worker_id)

    # ---- decisions ------------------------------------------------------------------------
    def choose(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
               lora: str = "", session_id: str = "") -> RouteDecision:
        t0 = time.perf_counter()
        packed = pack_tokens(token_ids)
        hashes = packed_block_hashes(packed, self.page_size, lora_root(lora))  # adapters' caches never match
        opaque = not self.approximate and has_negative(packed)
        if opaque:
            best, overlap, dp_rank = self._choose_opaque(hashes, candidates)
        else:
            best, overlap, dp_rank = self._choose(hashes, candidates)
        blocks = -(-len(token_ids) // self.page_size)
        self._routed[request_id] = _Routed(best, blocks)
        self._active[best] = self._active.get(best, 0) + blocks
        self._update_load(best)
        if self.approximate:
            self._remember(self.index, self._predicted, best, hashes)
        elif opaque:
            self._remember(self._guessed, self._guesses, best, hashes)
        _KV_DECISIONS.inc()
        HIT_BLOCKS.inc(overlap)
        PROMPT_BLOCKS.inc(len(hashes))
        DECISION_TIME.observe(time.perf_counter() - t0)
        return RouteDecision(best, overlap, dp_rank)

    def _choose(self, hashes: list[int], candidates: Sequence[str]) -> tuple[str, int, int | None]:
        """The decision from the index's groups of matching workers (shared.kv.radix.KvIndex.match): one pass
        over the matching workers for their instance's best worth, then the cost of each candidate."""
        index = self.index
        # one candidate (a session's worker): only its slots are walked; the choice is made, the overlap is not
        groups = index.match(hashes, self.tier_weights, index.bits_of(candidates[0]) if len(candidates) == 1 else -1)
        keys = index.slot_keys
        worth: dict[str, float] = {}  # instance -> its best rank's weighted cached blocks
        get = worth.get
        for mask, _, score in groups:
            if score <= 0:
                continue
            while mask:
                low = mask & -mask
                iid = keys[low.bit_length() - 1][0]  # type: ignore[index]
                if score > get(iid, 0):
                    worth[iid] = score
                mask ^= low
        best = self._pick(len(hashes), worth, candidates)
        overlap, by_rank = 0, {}
        bits = index.bits_of(best)
        if bits:
            for mask, depth, score in groups:
                mask &= bits
                while mask:
                    low = mask & -mask
                    by_rank[keys[low.bit_length() - 1][1]] = score  # type: ignore[index]
                    overlap = max(overlap, depth)
                    mask ^= low
        # a worker with several DP ranks: send the request to the rank that holds the prefix
        ranks = len(self._last_seq.get(best, ()))
        dp_rank = max(by_rank, key=lambda r: (by_rank[r], -r)) if ranks > 1 and overlap else None
        return best, overlap, dp_rank

    def _choose_opaque(self, hashes: list[int], candidates: Sequence[str]) -> tuple[str, int, int | None]:
        """A prompt with opaque parts: the index's matches and where this router sent such prompts before,
        per worker (the larger of the two)."""
        overlaps: dict[tuple[str, int], int] = {}
        scores: dict[tuple[str, int], float] = {}
        keys = self.index.slot_keys
        for mask, depth, score in self.index.match(hashes, self.tier_weights):
            while mask:
                low = mask & -mask
                key = keys[low.bit_length() - 1]
                overlaps[key], scores[key] = depth, score  # type: ignore[index]
                mask ^= low
        for key, n in self._guessed.overlaps(hashes).items():
            overlaps[key] = max(n, overlaps.get(key, 0))
            scores[key] = max(n * self.tier_weights[0], scores.get(key, 0))
        worth: dict[str, float] = {}
        for (iid, _), n in scores.items():
            if n > worth.get(iid, 0):
                worth[iid] = n
        best = self._pick(len(hashes), worth, candidates)
        by_rank = {rank: scores.get((iid, rank), 0.0) for (iid, rank) in overlaps if iid == best}
        overlap = max((n for (iid, _), n in overlaps.items() if iid == best), default=0)
        ranks = len(self._last_seq.get(best, ()))
        dp_rank = max(by_rank, key=lambda r: (by_rank[r], -r)) if ranks > 1 and overlap else None
        return best, overlap, dp_rank

    def _remember(self, index: KvIndex, expiry: deque[tuple[float, str, list[int]]], instance_id: str,
                  hashes: list[int]) -> None:
        """Assume the worker now caches this prompt, for `approximate_ttl` seconds."""
        now = time.monotonic()
        while expiry and expiry[0][0] < now:
            _, iid, old = expiry.popleft()
            index.apply((iid, 0), BlockRemoved(block_hashes=old))
        index.apply((instance_id, 0), BlockStored(block_hashes=hashes, token_ids=[], block_size=self.page_size))
        expiry.append((now + self.approximate_ttl, instance_id, hashes))

    def _pick(self, n_blocks: int, worth: dict[str, float], candidates: Sequence[str]) -> str:
        """The cheapest candidate (`worth`: weighted cached blocks per instance; absent: none)."""
        weight = self.overlap_weight
        # a candidate caching nothing costs weight * n_blocks + its load: built in C (map), no Python loop over
        # the candidates; then the few that cache something, each as weight * (n_blocks - worth) + load
        costs = list(map(add, repeat(weight * n_blocks), map(self._loads.get, candidates, repeat(0))))
        if worth:
            at = dict(zip(candidates, range(len(candidates)), strict=True))
            for iid, s in worth.items():
                i = at.get(iid)
                if i is not None:
                    costs[i] = weight * (n_blocks - s) + self._loads.get(iid, 0)
        lo = min(costs)
        if self.temperature > 0:
            weights = [math.exp(-(c - lo) / self.temperature) for c in costs]
            return self._rng.choices(list(candidates), weights)[0]
        if costs.count(lo) == 1:
            return self._rng.choice((candidates[costs.index(lo)],))  # the draw is taken all the same (seeded runs)
        return self._rng.choice([c for c, cost in zip(candidates, costs, strict=True) if cost == lo])

    def _load(self, instance_id: str) -> float:
        return self._loads.get(instance_id, 0)

    def _update_load(self, instance_id: str) -> None:
        """Recompute one instance's load from what it reported and what this router sent it since."""
        tracked = self._active.get(instance_id, 0)
        rep = self._reported.get(instance_id)
        if rep is None and not tracked:
            self._loads.pop(instance_id, None)  # idle, or gone
        else:
            self._loads[instance_id] = tracked if rep is None else \
                max(tracked, rep.kv_used_blocks) + rep.waiting * self.page_size

    def finished(self, request_id: str) -> None:
        r = self._routed.pop(request_id, None)
        if r is None:
            return
        left = self._active.get(r.instance_id, 0) - r.blocks
        if left > 0:
            self._active[r.instance_id] = left
        else:
            self._active.pop(r.instance_id, None)
        self._update_load(r.instance_id)
