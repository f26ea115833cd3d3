"""The local connector: starts worker processes (the command `shoal up` runs) and drains them by SIGTERM.

It sizes the one pool its `--worker-args` describe (parsed as the worker parses them). It stops only
the workers it started, newest first, each by SIGTERM (the worker deregisters, finishes its requests
in flight, then exits), and waits for each to exit in the background; `close` drains the rest.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

from services.planner.observe import AGG, DECODE, PREFILL, Pool
from services.worker.args import parse as parse_worker
from shared.cluster.procs import ServiceProc, spawn
from shared.config.args import CommonConfig
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger

log = get_logger("shoal.planner")
EXIT_WAIT_S = 120.0  # after SIGTERM: the worker's drain grace and some; then SIGKILL


class LocalConnector:
    def __init__(self, common: CommonConfig, worker_args: str, log_dir: Path) -> None:
        self.argv = ["--nats-url", common.nats.url, "--namespace", common.namespace, *shlex.split(worker_args)]
        cfg = parse_worker(self.argv)
        role = {"prefill": PREFILL, "decode": DECODE}.get(cfg.disaggregation_mode, AGG)
        self.pool = Pool(cfg.served_model_name, cfg.component, role)
        self.module = "prefill" if role == PREFILL else "decode"
        self.log_dir = log_dir
        self.procs: list[ServiceProc] = []  # started and not asked to stop, oldest first
        self._stopping: set[asyncio.Task[int | None]] = set()
        self._n = 0

    def pools(self) -> list[Pool]:
        return [self.pool]

    def handles(self, pool: Pool) -> bool:
        return pool == self.pool

    async def scale(self, pool: Pool, actual: int, desired: int) -> int:
        self.procs = [p for p in self.procs if p.alive()]
        if desired > actual:
            for _ in range(desired - actual):
                await self._start()
            return desired
        stop = min(actual - desired, len(self.procs))  # the others are not ours to stop
        for _ in range(stop):
            self._drain(self.procs.pop())
        return actual - stop

    async def _start(self) -> None:
        self._n += 1
        name = f"planner-worker{self._n}"
        p = await asyncio.to_thread(spawn, name, self.module, self.argv, self.log_dir)
        self.procs.append(p)
        log.info("worker_started", name=name, pid=p.pid, pool=self.pool.component, model=self.pool.model)

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
        for p in reversed(self.procs):
            self._drain(p)
        self.procs = []
        pending = list(self._stopping)
        if pending:
            done, _ = await asyncio.wait(pending, timeout=EXIT_WAIT_S + 10)
            await cancel_and_wait(*[t for t in pending if t not in done])
