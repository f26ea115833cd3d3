"""Fixtures that own real processes: nats-server, workers, frontends. All stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import ServiceProc, spawn


@pytest.fixture(scope="session")
def tiny_model() -> Iterator[Path]:
    from shared.model.tiny import make_tiny

    d = Path(tempfile.mkdtemp(prefix="shoal-tiny-"))
    path = make_tiny(d / "tiny")
    yield path
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_vlm() -> Iterator[Path]:
    """The tiny Llava of `shoal model make-tiny --vision`."""
    from shared.model.tiny_vlm import make_tiny_vlm

    d = Path(tempfile.mkdtemp(prefix="shoal-vlm-"))
    yield make_tiny_vlm(d / "tiny-vlm")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    try:
        yield server
    finally:
        server.stop()


class Cluster:
    """Start services against one nats-server; everything is stopped at teardown."""

    def __init__(self, nats: NatsServer, model: Path, log_dir: Path, namespace: str = "test") -> None:
        self.nats = nats
        self.model = model
        self.log_dir = log_dir
        self.namespace = namespace
        self.procs: list[ServiceProc] = []
        self.http_port = 0

    @property
    def common(self) -> list[str]:
        return ["--nats-url", self.nats.url, "--namespace", self.namespace]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def model_name(self) -> str:
        return self.model.name

    def worker(self, *args: str, engine: str = "mock", name: str | None = None, wait: bool = True,
               service: str = "decode") -> ServiceProc:
        name = name or f"worker{len(self.procs)}"
        p = spawn(name, service, [*self.common, "--engine", engine, "--model-path", str(self.model), *args],
                  self.log_dir)
        self.procs.append(p)
        return p.wait_ready(120) if wait else p

    def frontend(self, *args: str, wait: bool = True) -> ServiceProc:
        self.http_port = free_port()
        p = spawn("frontend", "frontend", [*self.common, "--http-port", str(self.http_port), *args], self.log_dir)
        self.procs.append(p)
        if wait:
            p.wait_ready(60)
            wait_port("127.0.0.1", self.http_port)
        return p

    def wait_models(self, n_workers: int = 1, timeout: float = 20.0) -> None:
        """Until the frontend serves a model on at least `n_workers` instances."""
        import json
        import time
        import urllib.request

        end = time.monotonic() + timeout
        health: dict = {}
        while time.monotonic() < end:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                health = json.loads(r.read())
            if health.get("models") and health.get("instances", 0) >= n_workers:
                return
            time.sleep(0.1)
        raise TimeoutError(f"frontend never listed a model on {n_workers} instance(s): {health}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.stop(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(40)}" for p in self.procs)


@pytest.fixture
def cluster(nats_server: NatsServer, tiny_model: Path, tmp_path: Path, request: pytest.FixtureRequest
            ) -> Iterator[Cluster]:
    c = Cluster(nats_server, tiny_model, tmp_path / "logs")
    try:
        yield c
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed and os.environ.get("SHOAL_TEST_LOGS"):
            print(c.logs())
        c.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
