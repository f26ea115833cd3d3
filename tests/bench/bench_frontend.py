"""Frontend throughput and overhead: shoal (frontend + NATS + mock worker) vs Dynamo 1.6.1.

python -m tests.bench.bench_frontend [--dynamo-venv VENV] [--concurrency 16 64] [--requests 2000]

The system under test is pinned to core 0 and the load generator to core 1, as
../shared/bench/dynamo_peer.sh does for Dynamo, and both are driven by the same
load generator (../shared/bench/loadgen.py when present, else ours). Results are
printed and appended to docs/BENCHMARKS.md.
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
from pathlib import Path

import psutil

from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import spawn
from tests.bench.report import append_report

ROOT = Path(__file__).resolve().parents[2]
SHARED_BENCH = ROOT.parent / "shared" / "bench"


def loadgen_cmd() -> list[str]:
    shared = SHARED_BENCH / "loadgen.py"
    base = ["taskset", "-c", "1", sys.executable]
    return [*base, str(shared)] if shared.exists() else [*base, "-m", "tests.bench.loadgen"]


def model_dir(work: Path) -> Path:
    """A 32k byte-level BPE tokenizer dir (as the Dynamo anchor used), else the tiny model."""
    maker = SHARED_BENCH / "make_tokenizer_dir.py"
    out = work / "tok32k"
    if maker.exists():
        subprocess.run([sys.executable, str(maker), str(out)], check=True, capture_output=True)
        return out
    from shared.model.tiny import make_tiny

    return make_tiny(work / "tiny")


def drive(url: str, model: str, conc: int, requests: int, label: str,
          workload: tuple[str, ...] = ("--prompt-words", "200", "--max-tokens", "64")) -> dict:
    cmd = [*loadgen_cmd(), "--url", url, "--model", model, "--concurrency", str(conc), "--requests",
           str(requests), *workload, "--label", label]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = 0.0
    return out


def run_shoal(work: Path, model: Path, concs: list[int], requests: int) -> list[dict]:
    nats = NatsServer(work / "nats", log_file=work / "nats.log")
    nats.start()
    os.sched_setaffinity(nats.proc.pid, {0})
    common = ["--nats-url", nats.url, "--namespace", "bench", "--log-level", "warning"]
    port = free_port()
    worker = spawn("worker", "decode", [*common, "--engine", "mock", "--model-path", str(model),
                                        "--served-model-name", "tiny", "--speedup-ratio", "1000",
                                        "--max-num-seqs", "256"], work)
    fe = spawn("frontend", "frontend", [*common, "--http-port", str(port)], work)
    procs = {"nats": nats.proc.pid, "worker": worker.pid, "frontend": fe.pid}
    try:
        for p in (worker, fe):
            os.sched_setaffinity(p.pid, {0})
            p.wait_ready(120)
        wait_port("127.0.0.1", port)
        time.sleep(1.0)
        url = f"http://127.0.0.1:{port}"
        drive(url, "tiny", 8, 200, "warmup")
        results = []
        for c in concs:
            before = cpu_seconds(procs)
            t0 = time.monotonic()
            r = drive(url, "tiny", c, requests, f"shoal c={c}")
            wall = time.monotonic() - t0
            after = cpu_seconds(procs)
            r["cpu_pct"] = {k: round(100 * (after[k] - before[k]) / wall) for k in procs}
            results.append(r)
            print(json.dumps(r), flush=True)
        results.append(direct_overhead(nats.url, url))
        return results
    finally:
        fe.stop()
        worker.stop()
        nats.stop()


def direct_overhead(nats_url: str, url: str) -> dict:
    """TTFT p50 at concurrency 1: through the frontend vs straight to the worker over NATS."""
    cmd = ["taskset", "-c", "1", sys.executable, "-m", "tests.bench.direct_ttft", "--nats-url", nats_url,
           "--namespace", "bench", "--url", url, "--model", "tiny"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(r), flush=True)
    return r


def run_dynamo(venv: Path, model: Path, concs: list[int], requests: int) -> list[dict]:
    script = SHARED_BENCH / "dynamo_peer.sh"
    results = []
    for c in concs:
        cmd = ["bash", str(script), str(venv), str(model), "1", "round-robin", "--concurrency", str(c),
               "--requests", str(requests), "--prompt-words", "200", "--max-tokens", "64", "--label",
               f"dynamo c={c}"]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PORT": str(free_port())})
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            print(f"dynamo run failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
            continue
        r = json.loads(lines[-1])
        cpu = [ln for ln in out.stdout.splitlines() if "frontend cpu%" in ln]
        r["cpu_note"] = cpu[-1] if cpu else ""
        results.append(r)
        print(json.dumps(r), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dynamo-venv", type=Path, default=None)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        work = Path(tmp)
        model = model_dir(work)
        rows = run_shoal(work, model, a.concurrency, a.requests)
        if a.dynamo_venv:
            rows += run_dynamo(a.dynamo_venv, model, a.concurrency, a.requests)
    if not a.no_report:
        append_report("Frontend: shoal vs Dynamo 1.6.1 (mock workers, near-zero cost)",
                      " ".join(["python -m tests.bench.bench_frontend", *sys.argv[1:]]), rows,
                      f"{platform.node()}: {os.cpu_count()} cores; SUT pinned to core 0, loadgen to core 1")


if __name__ == "__main__":
    main()
