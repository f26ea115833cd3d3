"""KV-aware routing side by side: shoal vs NVIDIA Dynamo 1.6.1, same workload, same load generator.

python -m tests.bench.bench_router_peer --dynamo-venv VENV [--workers 4] [--blocks 1000] [--speedup 5]
    [--concurrency 32] [--requests 1500] [--prefixes 48] [--prefix-words 1000] [--prompt-words 100]

Both systems run N simulated workers (shoal's mock engine, Dynamo's mocker) with the same KV
capacity in 16-token blocks, first round-robin, then kv; the system under test is pinned to core 0
and ../shared/bench/loadgen.py to core 1 (as ../shared/bench/dynamo_peer.sh does). The default
workload's shared prefixes need about three times one worker's blocks, so a router that scatters a
prefix over every worker evicts it, and one that keeps each prefix on one worker finds it cached.
Routing quality is the fraction of prompt tokens found cached (from usage). TTFT and tokens/s also
depend on each simulator's timing model, so compare them within a system (kv against round-robin).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import spawn
from tests.bench.bench_frontend import SHARED_BENCH, cpu_seconds, drive, model_dir
from tests.bench.report import append_report

MODES = ("round-robin", "kv")


def workload(a: argparse.Namespace) -> tuple[str, ...]:
    return ("--prompt-words", str(a.prompt_words), "--max-tokens", str(a.max_tokens), "--prefixes",
            str(a.prefixes), "--prefix-words", str(a.prefix_words), "--seed", "7")


def run_shoal(work: Path, model: Path, mode: str, a: argparse.Namespace) -> dict:
    nats = NatsServer(work / f"nats-{mode}", log_file=work / f"nats-{mode}.log").start()
    os.sched_setaffinity(nats.proc.pid, {0})
    common = ["--nats-url", nats.url, "--namespace", "peer", "--log-level", "warning"]
    port = free_port()
    procs = [spawn(f"w{i}-{mode}", "decode", [*common, "--engine", "mock", "--model-path", str(model),
                                              "--served-model-name", "tiny", "--num-blocks", str(a.blocks),
                                              "--speedup-ratio", str(a.speedup), "--max-num-seqs", "256"], work)
             for i in range(a.workers)]
    procs.append(spawn(f"fe-{mode}", "frontend", [*common, "--http-port", str(port), "--router-mode", mode], work))
    try:
        for p in procs:
            os.sched_setaffinity(p.pid, {0})
            p.wait_ready(120)
        wait_port("127.0.0.1", port)
        time.sleep(1.5)  # every worker's card reaches the frontend
        pids = {"nats": nats.proc.pid, "frontend": procs[-1].pid} | {p.name: p.pid for p in procs[:-1]}
        before, t0 = cpu_seconds(pids), time.monotonic()
        row = drive(f"http://127.0.0.1:{port}", "tiny", a.concurrency, a.requests, f"shoal {mode}", workload(a))
        wall, after = time.monotonic() - t0, cpu_seconds(pids)
        row["cpu_pct"] = {k: round(100 * (after[k] - before[k]) / wall) for k in pids}
        row["requests_per_worker"] = [served(p.system_port) for p in procs[:-1]]
        return row
    finally:
        for p in procs:
            p.stop()
        nats.stop()


def served(system_port: int) -> int:
    """Requests a worker finished, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{system_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(int(s.value) for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "shoal_endpoint_requests_total" and s.labels.get("outcome") == "ok")


def run_dynamo(venv: Path, model: Path, mode: str, a: argparse.Namespace) -> dict | None:
    cmd = ["bash", str(SHARED_BENCH / "dynamo_peer.sh"), str(venv), str(model), str(a.workers), mode,
           "--concurrency", str(a.concurrency), "--requests", str(a.requests), *workload(a),
           "--label", f"dynamo {mode}"]
    env = {**os.environ, "PORT": str(free_port()), "SPEEDUP": str(a.speedup),
           "MOCKER_ARGS": f"--num-gpu-blocks-override {a.blocks}"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        print(f"dynamo {mode} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}", flush=True)
        return None
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dynamo-venv", type=Path, default=os.environ.get("DYNAMO_VENV"))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=1000, help="KV blocks of 16 tokens per worker")
    ap.add_argument("--speedup", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--prefixes", type=int, default=48)
    ap.add_argument("--prefix-words", type=int, default=1000)
    ap.add_argument("--prompt-words", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="shoal-peer-") as tmp:
        work = Path(tmp)
        model = model_dir(work)
        for mode in MODES:
            rows.append(run_shoal(work, model, mode, a))
            print(json.dumps(rows[-1]), flush=True)
            if a.dynamo_venv:
                row = run_dynamo(a.dynamo_venv, model, mode, a)
                if row:
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if not a.no_report:
        append_report(f"KV routing side by side: shoal vs Dynamo 1.6.1 ({a.workers} simulated workers, "
                      f"{a.blocks} blocks each)", " ".join(["python -m tests.bench.bench_router_peer", *sys.argv[1:]]),
                      rows, f"{platform.node()}: {os.cpu_count()} cores; SUT pinned to core 0, loadgen to core 1")


if __name__ == "__main__":
    main()
