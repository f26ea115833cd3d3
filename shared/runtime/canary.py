"""Canary health checks: an endpoint that has served nothing for a while sends itself a small request.

    canary = Canary(svc.rt, server, lambda rid: EngineRequest(rid, [1], stop=StopConditions(max_tokens=1)),
                    cfg.canary, on_health=svc.set_ready)
    await canary.start()      # after server.register(): the instance is visible
    ...
    await canary.stop()

Who sends it: the worker itself, to its own instance subject over NATS, through the same client path
as user requests (subscription, handler, engine), as Dynamo's runtime does per endpoint. One sender per
worker, whatever the number of frontends, and no frontend has to track other services' idleness.
A canary that fails or takes longer than `timeout` marks the instance unhealthy: its discovery record
says `healthy: false` (frontends skip it) and `on_health(False)` turns /ready false. It keeps probing
every `interval`; the first canary that answers marks it healthy again. A stuck worker process (no
event loop) cannot send canaries, but then its discovery lease expires anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable

import msgspec

from shared.runtime.client import EndpointClient
from shared.runtime.errors import RuntimeFailure
from shared.runtime.runtime import Runtime
from shared.runtime.server import EndpointServer
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter

log = get_logger("shoal.canary")
CHECKS = counter("shoal_worker_canary_checks_total", "Canary requests a worker sent itself, by result",
                 ["result"])


class CanaryConfig(msgspec.Struct, frozen=True):
    interval: float = 0.0  # seconds without serving before a canary goes out; 0: no canaries
    timeout: float = 10.0  # seconds a canary may take before the instance counts as unhealthy


def add_canary_args(p: argparse.ArgumentParser) -> None:
    defaults = CanaryConfig()
    g = p.add_argument_group("canary health checks")
    g.add_argument("--canary-interval", type=float, default=defaults.interval, metavar="S",
                   help="after S seconds without serving, send this worker a 1-token request; one that fails "
                        "or times out takes it out of routing (and /ready) until one passes (0: off)")
    g.add_argument("--canary-timeout", type=float, default=defaults.timeout, metavar="S",
                   help="seconds a canary may take")


def canary_from_args(ns: argparse.Namespace) -> CanaryConfig:
    return CanaryConfig(interval=ns.canary_interval, timeout=ns.canary_timeout)


class Canary:
    def __init__(self, rt: Runtime, server: EndpointServer, make_request: Callable[[str], msgspec.Struct],
                 cfg: CanaryConfig, on_health: Callable[[bool], None]) -> None:
        self.rt, self.server, self.make_request, self.cfg = rt, server, make_request, cfg
        self.on_health = on_health
        self.healthy = True
        self._client: EndpointClient[msgspec.Raw] = EndpointClient(rt, server.component, server.endpoint,
                                                                  msgspec.Raw)
        self._ids = itertools.count()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._client.start()
        self._task = asyncio.create_task(self._loop(), name="canary")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self._client.stop()

    async def _loop(self) -> None:
        while True:
            idle_for = self.server.last_served + self.cfg.interval - time.monotonic()
            if idle_for > 0:
                await asyncio.sleep(idle_for)
                continue
            ok = await self.probe()
            await self._set_health(ok)
            if not ok:
                await asyncio.sleep(self.cfg.interval)

    async def probe(self) -> bool:
        """Send one canary to this instance; True when it ends within the timeout."""
        rid = f"canary-{self.rt.instance_id}-{next(self._ids)}"
        try:
            async with asyncio.timeout(self.cfg.timeout):
                async with contextlib.aclosing(self._client.generate(self.make_request(rid), rid,
                                                                     instance_id=self.rt.instance_id)) as batches:
                    async for _ in batches:
                        pass
        except (TimeoutError, RuntimeFailure) as e:
            CHECKS.labels("failed").inc()
            log.warning("canary_failed", request_id=rid, error=str(e) or type(e).__name__)
            return False
        CHECKS.labels("ok").inc()
        return True

    async def _set_health(self, healthy: bool) -> None:
        if healthy == self.healthy:
            return
        self.healthy = healthy
        await self.server.set_healthy(healthy)
        self.on_health(healthy)
        log.warning("instance_health", healthy=healthy, instance_id=self.rt.instance_id)
