"""The KV router fed live: KV events replayed from JetStream, load from core NATS."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from protocol import codec, subjects
from protocol.discovery import DEFAULT_PAGE_SIZE
from protocol.kv_events import KvEventBatch
from shared.routing.kv_router import KvRouter
from shared.routing.load_feed import LoadFeed
from shared.routing.tiers import GPU_ONLY, TierWeights
from shared.runtime.publishers import ensure_kv_stream
from shared.runtime.replicas import while_electing
from shared.runtime.runtime import Runtime
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter

log = get_logger("shoal.router")
# The ordered consumer is re-made from the next sequence after two missed heartbeats (its NATS node
# was lost): nothing is skipped, and the router is behind for at most ~2 heartbeats.
HEARTBEAT_S = 1.0
EVENTS = counter("shoal_router_kv_batches_total", "KV event batches applied or skipped", ["result"])


class LiveKvRouter(KvRouter):
    """A KvRouter whose index follows the workers of one component.

    Starting (or restarting) replays the whole event stream, so a late router
    catches up; per-worker sequence numbers make replays and reconnects idempotent.
    """

    def __init__(self, runtime: Runtime, component: str, replay_timeout: float = 10.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.rt = runtime
        self.component = component
        self.replay_timeout = replay_timeout
        self.batches = {"applied": 0, "duplicate": 0}
        self._received = 0  # messages handled by _on_events
        self._caught_up = asyncio.Event()
        self._subs: list[Any] = []
        self._unsubscribe_load: Any = None

    async def start(self) -> None:
        """Subscribe, then wait (up to `replay_timeout`) until the stream's backlog is applied."""
        ns = self.rt.namespace
        t0 = time.monotonic()
        await ensure_kv_stream(self.rt)
        cfg = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        events = await while_electing(lambda: self.rt.js.subscribe(  # a NATS node just lost: wait for a leader
            subjects.kv_events_filter(ns, self.component), cb=self._on_events, ordered_consumer=True, config=cfg,
            idle_heartbeat=HEARTBEAT_S))
        self._subs = [events]
        self._unsubscribe_load = await LoadFeed.of(self.rt).add(self.component, self.apply_load)
        with contextlib.suppress(Exception):
            info = await events.consumer_info()
            if info.num_pending == 0 and self._received >= info.delivered.consumer_seq:
                self._caught_up.set()  # nothing (more) to replay, e.g. only other components' events
        try:
            await asyncio.wait_for(self._caught_up.wait(), self.replay_timeout)
        except TimeoutError:
            log.warning("kv_replay_incomplete", after_s=self.replay_timeout, **self.batches)
        log.info("kv_replay_done", secs=round(time.monotonic() - t0, 3), blocks=self.index.num_blocks,
                 **self.batches)

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._unsubscribe_load is not None:
            await self._unsubscribe_load()
            self._unsubscribe_load = None

    async def _on_events(self, msg: Msg) -> None:
        self._received += 1
        try:
            batch = codec.decode(msg.data, KvEventBatch)
        except Exception as e:
            log.warning("kv_batch_undecodable", error=str(e))
        else:
            result = "applied" if self.apply_batch(batch) else "duplicate"
            self.batches[result] += 1
            EVENTS.labels(result).inc()
        with contextlib.suppress(Exception):
            if msg.metadata.num_pending == 0:
                self._caught_up.set()


def make_kv_router(runtime: Runtime | None = None, component: str = "backend", page_size: int = DEFAULT_PAGE_SIZE,
                   overlap_weight: float = 1.0, temperature: float = 0.0, approximate: bool = False,
                   tier_weights: TierWeights = GPU_ONLY) -> KvRouter:
    kw = {"page_size": page_size, "overlap_weight": overlap_weight, "temperature": temperature,
          "approximate": approximate, "tier_weights": tier_weights}
    if runtime is None:
        return KvRouter(**kw)
    return LiveKvRouter(runtime, component, **kw)
