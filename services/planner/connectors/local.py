"""The local connector: starts worker processes (the command `shoal up` runs) and drains them by SIGTERM.

It sizes the pools its `--worker-args` describe (each parsed as the worker parses it: model,
component, prefill/decode/aggregated). It stops only the workers it started, newest first, each by
SIGTERM (the worker deregisters, finishes its requests in flight, then exits), and waits for each to
exit in the background; `close` drains the rest.

NATS identity: with `SHOAL_WORKER_NATS_*` set (e.g. SHOAL_WORKER_NATS_USER / SHOAL_WORKER_NATS_PASSWORD: the
worker role's), the workers connect as that and never inherit the planner's own NATS_* secrets; without
them, the workers inherit the planner's environment (one identity for every service).
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.planner.observe import AGG, DECODE, PREFILL, Pool
from services.worker.args import parse as parse_worker
from shared.cluster.procs import ServiceProc, spawn
from shared.config.args import NATS_IDENTITY_ENV, WORKER_ENV_PREFIX, CommonConfig
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger

log = get_logger("shoal.planner")
EXIT_WAIT_S = 120.0  # after SIGTERM: the worker's drain grace and some; then SIGKILL


@dataclass
class _Fleet:
    """One pool's workers: how to start one, and those started and not asked to stop, oldest first."""

    pool: Pool
    module: str
    argv: list[str]
    procs: list[ServiceProc] = field(default_factory=list)


def _fleet(common: CommonConfig, worker_args: str) -> _Fleet:
    argv = ["--nats-url", common.nats.url, "--namespace", common.namespace, *shlex.split(worker_args)]
    cfg = parse_worker(argv)  # the pool these flags make, as the worker will see them
    role = {"prefill": PREFILL, "decode": DECODE}.get(cfg.disaggregation_mode, AGG)
    return _Fleet(Pool(cfg.served_model_name, cfg.component, role), "prefill" if role == PREFILL else "decode", argv)


def worker_env(environ: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(variables to set, variables to drop) for a worker: SHOAL_WORKER_NATS_X becomes its NATS_X, and once any
    is given, the planner's own NATS identity variables are not passed on."""
    env = {k: environ[WORKER_ENV_PREFIX + k] for k in NATS_IDENTITY_ENV if WORKER_ENV_PREFIX + k in environ}
    return env, tuple(k for k in NATS_IDENTITY_ENV if k not in env) if env else ()


class LocalConnector:
    def __init__(self, common: CommonConfig, worker_args: list[str], log_dir: Path) -> None:
        self.fleets = {f.pool: f for f in (_fleet(common, a) for a in worker_args)}
        self.log_dir = log_dir
        self._stopping: set[asyncio.Task[int | None]] = set()
        self._n = 0

    def pools(self) -> list[Pool]:
        return list(self.fleets)

    def handles(self, pool: Pool) -> bool:
        return pool in self.fleets

    async def scale(self, pool: Pool, actual: int, desired: int) -> int:
        fleet = self.fleets[pool]
        fleet.procs = [p for p in fleet.procs if p.alive()]
        if desired > actual:
            for _ in range(desired - actual):
                await self._start(fleet)
            return desired
        stop = min(actual - desired, len(fleet.procs))  # the others are not ours to stop
        for _ in range(stop):
            self._drain(fleet.procs.pop())
        return actual - stop

    async def _start(self, fleet: _Fleet) -> None:
        self._n += 1
        name = f"planner-worker{self._n}"
        env, drop = worker_env(os.environ)
        p = await asyncio.to_thread(spawn, name, fleet.module, fleet.argv, self.log_dir, env, drop_env=drop)
        fleet.procs.append(p)
        log.info("worker_started", name=name, pid=p.pid, pool=fleet.pool.component, model=fleet.pool.model)

    def _drain(self, p: ServiceProc) -> None:
        log.info("worker_draining", name=p.name, pid=p.pid)
        task = asyncio.create_task(asyncio.to_thread(p.stop, EXIT_WAIT_S), name=f"drain:{p.name}")
        self._stopping.add(task)
        task.add_done_callback(lambda t: self._stopped(p, t))

    def _stopped(self, p: ServiceProc, task: asyncio.Task[int | None]) -> None:
        self._stopping.discard(task)
        if not task.cancelled():
            log.info("worker_stopped", name=p.name, pid=p.pid, returncode=task.result())

    async def close(self) -> None:
        """Drain every worker this connector started and wait for all of them to exit."""
        for fleet in self.fleets.values():
            for p in reversed(fleet.procs):
                self._drain(p)
            fleet.procs = []
        pending = list(self._stopping)
        if pending:
            done, _ = await asyncio.wait(pending, timeout=EXIT_WAIT_S + 10)
            await cancel_and_wait(*[t for t in pending if t not in done])
