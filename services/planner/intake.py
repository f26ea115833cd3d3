"""The planner's inputs from NATS: model cards (which pools exist and how many workers each has live),
frontends' per-model stats windows (traffic, TTFT, ITL) and workers' load."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from protocol import codec, subjects
from protocol.discovery import ModelCard
from protocol.kv_events import WorkerLoad
from protocol.stats import FrontendStats
from services.planner.observe import Pool, PoolLoad, Snapshot, TrafficWindow, pool_of
from shared.routing.load_feed import LoadFeed
from shared.runtime.discovery import KeyUpdate
from shared.runtime.runtime import Runtime
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger

log = get_logger("shoal.planner")


class Intake:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.cards: dict[str, ModelCard] = {}  # instance id -> its card (one card per instance)
        self.last_cards: dict[Pool, ModelCard] = {}  # each pool's last card seen: what a parked model lists
        self.loads: dict[tuple[str, int], WorkerLoad] = {}  # (instance id, dp rank) -> its last load
        self._windows: dict[str, TrafficWindow] = {}
        self._since = time.monotonic()
        self._subs: list[Any] = []
        self._watch: asyncio.Task[None] | None = None
        self._unsubscribe_load: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        ns = self.rt.namespace
        self._subs = [await self.rt.nc.subscribe(subjects.frontend_stats_filter(ns), cb=self._on_stats)]
        self._unsubscribe_load = await LoadFeed.of(self.rt).add("*", self.apply_load)
        flt = subjects.model_key_filter(ns)
        for key, value in (await self.rt.discovery.snapshot(subjects.MODELS_BUCKET, flt)).items():
            self._apply(key, value)  # the first decision sees every live worker
        self._watch = asyncio.create_task(self._watch_cards(), name="planner-cards")
        self.take()

    async def stop(self) -> None:
        await cancel_and_wait(self._watch)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._unsubscribe_load is not None:
            await self._unsubscribe_load()

    def take(self) -> Snapshot:
        """What happened since the last take, and the fleet as it is now."""
        now = time.monotonic()
        seconds, self._since = now - self._since, now
        windows, self._windows = self._windows, {}
        live: dict[Pool, int] = {}
        load: dict[Pool, PoolLoad] = {}
        for iid, card in self.cards.items():
            if card.model_type == "embedding":
                continue  # no TTFT/ITL to plan by
            pool = pool_of(card)
            live[pool] = live.get(pool, 0) + 1
            for (wid, _), w in self.loads.items():
                if wid == iid:
                    s = load.get(pool, PoolLoad())
                    load[pool] = PoolLoad(s.running + w.running, s.waiting + w.waiting,
                                          s.kv_used_blocks + w.kv_used_blocks, s.kv_total_blocks + w.kv_total_blocks)
        return Snapshot(live, {m: w.close(seconds) for m, w in windows.items()}, load, seconds)

    async def _on_stats(self, msg: Msg) -> None:
        try:
            stats = codec.decode(msg.data, FrontendStats)
        except Exception as e:
            log.warning("frontend_stats_undecodable", error=str(e))
            return
        for m in stats.models:
            self._windows.setdefault(m.model, TrafficWindow()).add(m)

    def apply_load(self, w: WorkerLoad) -> None:
        """One worker's report (from the process's LoadFeed, which counts the undecodable ones)."""
        self.loads[(w.worker_id, w.dp_rank)] = w

    def _apply(self, key: str, value: bytes | None) -> None:
        iid = key.rpartition(".")[2]
        if value is None:
            self.cards.pop(iid, None)
            self.loads = {k: v for k, v in self.loads.items() if k[0] != iid}
            return
        with contextlib.suppress(Exception):
            card = self.cards[iid] = codec.decode(value, ModelCard)
            self.last_cards[pool_of(card)] = card

    def live(self, pool: Pool) -> int:
        """Workers of `pool` in discovery now."""
        return sum(1 for c in self.cards.values() if pool_of(c) == pool)

    async def _watch_cards(self) -> None:
        async def apply(upd: KeyUpdate) -> None:
            self._apply(upd.key, upd.value)

        await self.rt.discovery.follow(subjects.MODELS_BUCKET, subjects.model_key_filter(self.rt.namespace), apply)
