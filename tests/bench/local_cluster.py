"""A throwaway cluster for benchmarks: nats-server, N workers, a frontend; all stopped on exit."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import ServiceProc, spawn


@dataclass
class BenchCluster:
    url: str
    nats: NatsServer
    workers: list[ServiceProc]
    frontend: ServiceProc
    pids: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def bench_cluster(work: Path, model: Path, worker_args: list[str], frontend_args: list[str] | None = None,
                  workers: int = 1, namespace: str = "bench", service: str = "decode") -> Iterator[BenchCluster]:
    """`service`: the workers' service (e.g. `score` for a cross-encoder)."""
    nats = NatsServer(work / f"nats-{namespace}").start()
    common = ["--nats-url", nats.url, "--namespace", namespace, "--log-level", "warning"]
    port = free_port()
    ws = [spawn(f"{namespace}-w{i}", service, [*common, "--model-path", str(model), *worker_args], work)
          for i in range(workers)]
    fe = spawn(f"{namespace}-frontend", "frontend", [*common, "--http-port", str(port), *(frontend_args or [])],
               work)
    try:
        for p in [*ws, fe]:
            p.wait_ready(120)
        wait_port("127.0.0.1", port)
        time.sleep(1.0)  # the frontend has seen every worker's model card
        pids = {"nats": nats.proc.pid if nats.proc else 0, "frontend": fe.pid}
        pids.update({w.name: w.pid for w in ws})
        yield BenchCluster(f"http://127.0.0.1:{port}", nats, ws, fe, pids)
    finally:
        for p in [fe, *ws]:
            p.stop()
        nats.stop()
