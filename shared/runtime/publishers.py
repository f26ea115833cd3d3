"""Workers' outgoing streams for routers: KV events (JetStream) and load (core NATS)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

import msgspec
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from protocol import codec, subjects
from protocol.kv_events import KvEvent, KvEventBatch, WorkerLoad
from shared.runtime.replicas import ensure_replicas
from shared.runtime.runtime import Runtime
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import gauge

log = get_logger("shoal.publishers")
LOAD = gauge("shoal_worker_load", "The engine's load as last published for the router: running and waiting "
             "requests, KV blocks used and total", ["component", "kind"], multiprocess_mode="livesum")

KV_STREAM_MAX_BYTES = 64 * 2**20  # oldest events go first: a replay then misses only old stores
MSG_ID_HEADER = "Nats-Msg-Id"  # JetStream keeps one copy per id (within its duplicate window)
RETRY_S = 0.2  # between attempts to store a batch while JetStream cannot
STOP_FLUSH_S = 2.0
# An unchanged load is sent again this often (it was every 2 s): a router that starts meanwhile counts an
# idle worker as idle anyway, and at fleet size the repeats were a message per worker every 2 s to every
# router, frontend and planner (docs/FLEET.md).
IDLE_REPORT_S = 10.0


async def ensure_kv_stream(rt: Runtime) -> str:
    """The JetStream stream that keeps every worker's KV events for replay (`rt.replicas` copies)."""
    name = subjects.kv_events_stream(rt.namespace)
    cfg = StreamConfig(
        name=name,
        subjects=[subjects.kv_events_all(rt.namespace)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_bytes=KV_STREAM_MAX_BYTES,
        num_replicas=rt.replicas,
    )
    try:
        await rt.js.stream_info(name)
    except Exception:
        with contextlib.suppress(Exception):  # created concurrently
            await rt.js.add_stream(cfg)
    else:
        await ensure_replicas(rt.js, name, rt.replicas)
    return name


class KvEventPublisher:
    """Collects events from the engine (any thread-safe call on the loop) and publishes batches.

    Each data-parallel rank is its own cache to the router: its own batches, its own sequence.
    A batch JetStream did not take (no link, a stream leader being elected) is sent again, in
    order, until it is: a router never sees a gap. Its `Nats-Msg-Id` lets the stream drop the
    copy of a batch whose acknowledgement, not the batch, was lost.
    """

    def __init__(self, rt: Runtime, component: str, flush_interval: float = 0.005) -> None:
        self.rt = rt
        self.subject = subjects.kv_events_subject(rt.namespace, component, rt.instance_id)
        self.flush_interval = flush_interval
        self.seq: dict[int, int] = {}  # per DP rank: the last batch's sequence number
        self._pending: dict[int, list[KvEvent]] = {}
        self._outbox: deque[tuple[str, bytes]] = deque()  # (message id, batch) not yet stored, oldest first
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_kv_stream(self.rt)
        self._task = asyncio.create_task(self._run(), name="kv-events")

    def sink(self, events: list[KvEvent], dp_rank: int = 0) -> None:
        self._pending.setdefault(dp_rank, []).extend(events)
        self._wake.set()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        with contextlib.suppress(TimeoutError):  # NATS gone: what is left is lost with this process anyway
            await asyncio.wait_for(self._flush(), STOP_FLUSH_S)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_interval)
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for rank, events in sorted(pending.items()):
            if not events:
                continue
            seq = self.seq[rank] = self.seq.get(rank, 0) + 1
            batch = KvEventBatch(worker_id=self.rt.instance_id, seq=seq, events=events, dp_rank=rank, ts=time.time())
            self._outbox.append((f"{self.rt.instance_id}.{rank}.{seq}", codec.encode(batch)))
        failing_since: float | None = None
        while self._outbox:
            msg_id, data = self._outbox[0]
            try:
                await self.rt.js.publish(self.subject, data, timeout=RETRY_S * 5, headers={MSG_ID_HEADER: msg_id})
            except Exception as e:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("kv_events_publish_failed", msg_id=msg_id, error=str(e) or type(e).__name__)
                await asyncio.sleep(RETRY_S)
                continue
            self._outbox.popleft()
            if failing_since is not None:
                log.info("kv_events_publish_resumed", after_s=round(time.monotonic() - failing_since, 3),
                         queued=len(self._outbox))
                failing_since = None


class LoadPublisher:
    def __init__(self, rt: Runtime, component: str, load: Callable[[], WorkerLoad],
                 interval: float = 0.2, idle_interval: float = IDLE_REPORT_S) -> None:
        """Sampled every `interval`; sent when it changed, and every `idle_interval` while it does not."""
        self.rt = rt
        self.idle_interval = idle_interval
        self.subject = subjects.load_subject(rt.namespace, component, rt.instance_id)
        self.load = load
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._gauges = {k: LOAD.labels(component, k) for k in ("running", "waiting", "kv_used_blocks",
                                                                 "kv_total_blocks")}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="load")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        last: WorkerLoad | None = None
        sent_at = 0.0
        while True:
            await asyncio.sleep(self.interval)
            cur = self.load()
            for kind, g in self._gauges.items():
                g.set(getattr(cur, kind))
            now = time.monotonic()
            if cur != last or now - sent_at >= self.idle_interval:  # on change, and once in a while when idle
                sent_at = now
                stamped = msgspec.structs.replace(cur, ts=time.time())
                with contextlib.suppress(Exception):
                    await self.rt.nc.publish(self.subject, codec.encode(stamped))
            last = cur
