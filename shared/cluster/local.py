"""`shoal up` / `shoal down`: a local cluster (nats-server, workers, frontend) on loopback.

`--nats-cluster 3` starts three clustered nats-servers instead of one (routes on loopback);
every service is given all three URLs.

State lives in ./.shoal: JetStream data, logs, and the PIDs of exactly what
`up` started, which `down` stops (SIGTERM, so workers drain first).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import time
import urllib.request
from pathlib import Path

from shared.cluster.natsd import NatsCluster, NatsServer, wait_port
from shared.cluster.procs import spawn
from shared.model.hub import is_hub_id, served_name

STATE = Path(".shoal")
PIDS = STATE / "pids.json"


def add_up_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="reference", choices=("reference", "mock", "sglang"))
    p.add_argument("--model-path", default=str(STATE / "models" / "tiny"),
                   help="model directory (the tiny model is made there if missing) or a Hugging Face id")
    p.add_argument("--revision", default=None, help="hub ids: branch, tag or commit")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--nats-port", type=int, default=4222, help="client port (of the first node of a cluster)")
    p.add_argument("--nats-cluster", type=int, default=1, metavar="N",
                   help="N clustered JetStream nats-servers (client ports --nats-port and up); 3 replicates "
                        "every bucket and stream, so losing one node loses nothing")
    p.add_argument("--router-mode", default="round-robin")
    p.add_argument("--namespace", default="shoal")
    p.add_argument("--worker-args", default="", help="extra worker flags, one string")
    p.add_argument("--frontend-args", default="", help="extra frontend flags, one string")
    p.add_argument("--planner", nargs=argparse.REMAINDER, metavar="PLANNER_FLAGS",
                   help="last: run the planner beside the cluster, with the local connector and every flag after "
                        "this (python -m services.planner --help); it adds workers beyond --workers and drains them")


def up(a: argparse.Namespace) -> int:
    if PIDS.exists() and any(_alive(pid) for pid in json.loads(PIDS.read_text()).values()):
        print("a local cluster is already running (see .shoal/pids.json); run `just down` first")
        return 1
    model = Path(a.model_path)
    hub = is_hub_id(a.model_path)
    if not hub and not (model / "config.json").exists():
        from shared.model.tiny import ensure_tiny

        ensure_tiny(model)
        print(f"made the tiny model in {model}")
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pids, nats_url = _start_nats(a, logs)
    common = ["--nats-url", nats_url, "--namespace", a.namespace]
    model_args = ["--model-path", a.model_path]
    model_args += ["--revision", a.revision] if a.revision else []
    name = served_name(a.model_path)
    worker_flags = ["--engine", a.engine, *model_args, *shlex.split(a.worker_args)]
    procs = []
    try:
        for i in range(a.workers):
            w = spawn(f"worker{i}", "decode", [*common, *worker_flags], logs, detach=True)
            pids[w.name] = w.pid
            procs.append(w)
        if a.planner is not None:
            planner = ["--connector", "local", "--worker-args", shlex.join(worker_flags), "--worker-log-dir", str(logs)]
            pl = spawn("planner", "planner", [*common, *planner, *a.planner], logs, detach=True)
            pids[pl.name] = pl.pid
            procs.append(pl)
        fe = spawn("frontend", "frontend", [*common, "--http-port", str(a.http_port), "--router-mode",
                                            a.router_mode, *a.frontend_args.split()], logs, detach=True)
        pids[fe.name] = fe.pid
        procs.append(fe)
        PIDS.write_text(json.dumps(pids))
        for p in procs:
            p.wait_ready(180)
        wait_port("127.0.0.1", a.http_port)
        _wait_model(a.http_port, name if not a.worker_args else None)
    except Exception as e:
        print(f"start-up failed: {e}")
        down(argparse.Namespace())
        return 1
    url = f"http://127.0.0.1:{a.http_port}"
    print(f"shoal is up: {url} (logs in {logs}, stop with `just down`)")
    print(f"  curl {url}/v1/models")
    print(f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json' "
          f"-d '{{\"model\":\"{name}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}],"
          f"\"max_tokens\":32,\"stream\":true}}'")
    return 0


def _start_nats(a: argparse.Namespace, logs: Path) -> tuple[dict[str, int], str]:
    """One nats-server, or a cluster of `--nats-cluster` nodes: their PIDs by name, and the URL(s) for services."""
    if a.nats_cluster <= 1:
        server = NatsServer(STATE / "nats", port=a.nats_port, log_file=logs / "nats.log").start()
        return {"nats": server.proc.pid if server.proc else 0}, server.url
    ports = [a.nats_port + i for i in range(a.nats_cluster)]
    cluster = NatsCluster(STATE / "nats-cluster", a.nats_cluster, ports=ports, log_dir=logs).start()
    return {f"nats{i}": n.proc.pid if n.proc else 0 for i, n in enumerate(cluster.nodes)}, cluster.url


def _wait_model(port: int, name: str | None, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                data = json.loads(r.read())["data"]
            if data and (name is None or any(m["id"] == name for m in data)):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the frontend did not list the model in time")


def down(a: argparse.Namespace) -> int:
    if not PIDS.exists():
        print("no local cluster recorded in .shoal/pids.json")
        return 0
    pids: dict[str, int] = json.loads(PIDS.read_text())
    first = ("frontend", "planner")  # the planner before the workers: it would replace them, and drains its own
    nats = [n for n in pids if n.startswith("nats")]  # last: the others drain through it
    order = [n for n in first if n in pids] + [n for n in pids if n not in first and n not in nats] + nats
    for name in order:
        pid = pids.get(name)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 150 if name == "planner" else 30):  # the planner drains the workers it added
                os.kill(pid, signal.SIGKILL)
            print(f"stopped {name} (pid {pid})")
    PIDS.unlink()
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False
