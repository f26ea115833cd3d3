"""The life of a service process: logging, NATS, system port, signals, drain.

    async with Service("decode", common) as svc:
        ...build engine, serve...
        svc.set_ready()
        await svc.stopped()          # SIGTERM / SIGINT
        ...drain...
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

from shared.config.args import CommonConfig
from shared.runtime.runtime import Runtime
from shared.telemetry.logging import configure_logging, get_logger
from shared.telemetry.system_server import SystemServer
from shared.telemetry.tracing import configure_tracing, shutdown_tracing


class Service:
    def __init__(self, name: str, common: CommonConfig, health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.name = name
        self.common = common
        self.log = get_logger(f"shoal.{name}")
        self.runtime: Runtime | None = None
        self.system: SystemServer | None = None
        self._ready = False
        self._health = health
        self._stop = asyncio.Event()

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    async def __aenter__(self) -> Service:
        c = self.common
        configure_logging(c.log_level, c.log_json, self.name)
        configure_tracing(self.name, c.otlp_endpoint)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.system = SystemServer(c.system_host, c.system_port, lambda: self._ready,
                                   lambda: self._health() if self._health else {})
        port = await self.system.start()
        self.runtime = await Runtime.connect(c.nats, c.namespace, self.name)
        self.log.info("service_started", namespace=c.namespace, instance_id=self.rt.instance_id,
                      system_port=port, nats_replicas=self.rt.replicas)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._ready = False
        if self.runtime is not None:
            await self.runtime.close()
        if self.system is not None:
            await self.system.stop()
        shutdown_tracing()  # send spans still queued
        self.log.info("service_stopped")

    def set_health(self, health: Callable[[], dict[str, Any]]) -> None:
        """Extra fields for /health (e.g. the engine's load)."""
        self._health = health

    def set_ready(self, ready: bool = True) -> None:
        self._ready = ready

    def request_stop(self) -> None:
        self._stop.set()

    async def stopped(self) -> None:
        await self._stop.wait()

    def _on_signal(self, sig: int) -> None:
        self.log.info("signal_received", signal=signal.Signals(sig).name)
        if self._stop.is_set():  # second signal: leave now
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().stop()
        self._stop.set()


def run(main: Callable[[], Any]) -> None:
    """Run an async main with uvloop when available."""
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
