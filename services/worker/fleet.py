"""A simulated fleet: N workers in one process, each the real worker runtime around its own engine.

    python -m services.worker --engine mock --model-path DIR --simulate 1000

Every simulated worker is `serve_worker` as a real one runs it: its own instance id, engine, endpoint
subscriptions, model card and instance record (leases), KV events and load reports, and a drain when it
leaves. What they share is what one process shares: one NATS connection, the tokenizer read once, and
one heartbeat sender naming all of their leases (shared.runtime.heartbeat). `--simulate-churn R` makes
R workers a second leave (drained, as on SIGTERM) and R new ones join, for as long as the fleet runs.
Used by tests/bench/bench_fleet.py; /ready turns true once all N have registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from protocol import subjects
from services.worker.args import WorkerConfig
from services.worker.lifecycle import serve_worker
from shared.runtime.heartbeat import HeartbeatSender
from shared.runtime.runtime import Runtime
from shared.runtime.service import Service
from shared.runtime.tasks import cancel_and_wait
from shared.tokenizer import Tokenizer


class SimService:
    """What serve_worker needs of a Service, for one simulated worker on the fleet's connection."""

    def __init__(self, parent: Service, rt: Runtime) -> None:
        self.name, self.log, self.common = parent.name, parent.log, parent.common
        self.runtime = rt
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def rt(self) -> Runtime:
        return self.runtime

    def set_health(self, health: object) -> None:
        pass

    def set_ready(self, ready: bool = True) -> None:
        if ready:
            self.ready.set()

    def request_stop(self) -> None:
        self._stop.set()

    async def stopped(self) -> None:
        await self._stop.wait()


class Fleet:
    def __init__(self, svc: Service, cfg: WorkerConfig, tokenizer: Tokenizer) -> None:
        self.svc, self.cfg, self.tokenizer = svc, cfg, tokenizer
        base = svc.rt
        self.heartbeats = HeartbeatSender(base.nc, subjects.heartbeat_subject(base.namespace), base.discovery.ttl)
        self.workers: dict[str, tuple[SimService, asyncio.Task[None]]] = {}
        self._sem = asyncio.Semaphore(max(1, cfg.fleet.start_concurrency))
        self.started = self.left = self.failed = 0

    async def add(self) -> str | None:
        """Start one simulated worker; its instance id once it is registered (None: it failed)."""
        base = self.svc.rt
        rt = Runtime(base.nc, base.namespace, base.discovery.ttl, base.name, base.replicas, self.heartbeats)
        sim = SimService(self.svc, rt)
        async with self._sem:
            task = asyncio.create_task(serve_worker(sim, self.cfg, self.tokenizer),  # type: ignore[arg-type]
                                       name=f"sim:{rt.instance_id}")
            ready = asyncio.create_task(sim.ready.wait())
            try:
                await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the fleet stops while this one starts
                await cancel_and_wait(task, ready)
                raise
        if not sim.ready.is_set():
            ready.cancel()
            self.failed += 1
            with contextlib.suppress(BaseException):
                await task
            self.svc.log.warning("sim_worker_failed", error=str(task.exception()) if not task.cancelled() else "")
            return None
        self.workers[rt.instance_id] = (sim, task)
        self.started += 1
        return rt.instance_id

    async def remove(self, instance_id: str) -> None:
        """Drain one simulated worker, as SIGTERM does a real one."""
        sim, task = self.workers.pop(instance_id)
        sim.request_stop()
        with contextlib.suppress(Exception):
            await task
        self.left += 1

    async def churn(self, rate: float) -> None:
        period = 1.0 / rate
        pending: set[asyncio.Task[object]] = set()
        while True:
            await asyncio.sleep(period)
            if self.workers:
                t = asyncio.create_task(self.remove(random.choice(list(self.workers))))
                pending.add(t)
                t.add_done_callback(pending.discard)
            t2 = asyncio.create_task(self.add())
            pending.add(t2)
            t2.add_done_callback(pending.discard)

    async def stop(self) -> None:
        await asyncio.gather(*(self.remove(iid) for iid in list(self.workers)), return_exceptions=True)
        await self.heartbeats.stop()


async def serve_fleet(svc: Service, cfg: WorkerConfig) -> None:
    tokenizer = Tokenizer.from_dir(cfg.model_path)
    fleet = Fleet(svc, cfg, tokenizer)
    t0 = time.monotonic()
    starting = asyncio.gather(*(fleet.add() for _ in range(cfg.fleet.simulate)))
    stop = asyncio.create_task(svc.stopped())
    await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
    if stop.done():  # SIGTERM while starting: no more starts, drain what started
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await fleet.stop()
        return
    stop.cancel()
    svc.set_ready()
    svc.log.info("fleet_ready", workers=len(fleet.workers), failed=fleet.failed,
                 secs=round(time.monotonic() - t0, 2))
    churn = asyncio.create_task(fleet.churn(cfg.fleet.churn)) if cfg.fleet.churn > 0 else None
    try:
        await svc.stopped()
    finally:
        await cancel_and_wait(churn)
        svc.set_ready(False)
        await fleet.stop()
        svc.log.info("fleet_stopped", started=fleet.started, left=fleet.left, failed=fleet.failed)
