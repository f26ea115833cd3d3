"""Frontend before/after: this checkout's frontend against another revision's, in alternating pairs.

python -m tests.bench.bench_frontend_ab [--base 77fe6f6] [--concurrency 16 64] [--requests 600] [--rounds 3]

One nats-server and one mock worker (near-zero cost, as bench_frontend) serve two frontends:
the base revision's code (git archive into a temp dir) and this checkout's. Each round drives
base then new at every concurrency with the same load generator, so drifts in the machine's
load fall on both sides alike. SUT pinned to core 0, loadgen to core 1. Raw rows go to
docs/bench/frontend_ab_<base>_<head>.jsonl; the summary (median req/s and TTFT p50 per side, and
new/base, and the frontend process's CPU time per request, which the machine's other load
disturbs less than throughput) is appended to docs/BENCHMARKS.md. Exits non-zero when the new
frontend's median throughput is more than --tolerance below the base's, or its CPU per request
more than --tolerance above, at any concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import ServiceProc, spawn
from tests.bench.bench_frontend import cpu_seconds, drive, model_dir
from tests.bench.report import append_report

ROOT = Path(__file__).resolve().parents[2]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def export(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def frontend(name: str, common: list[str], work: Path, cwd: Path) -> tuple[ServiceProc, str]:
    port = free_port()
    p = spawn(name, "frontend", [*common, "--http-port", str(port)], work, cwd=cwd)
    os.sched_setaffinity(p.pid, {0})
    p.wait_ready(120)
    wait_port("127.0.0.1", port)
    return p, f"http://127.0.0.1:{port}"


def summary(rows: list[dict], concs: list[int]) -> list[dict]:
    out = []
    for c in concs:
        side = {s: [r for r in rows if r["side"] == s and r["concurrency"] == c] for s in ("base", "new")}
        med = {s: statistics.median(r["req_s"] for r in rs) for s, rs in side.items()}
        ttft = {s: statistics.median(r["ttft_p50_ms"] for r in rs) for s, rs in side.items()}
        ratios = [n["req_s"] / b["req_s"] for b, n in zip(side["base"], side["new"], strict=True)]
        cpu = {s: statistics.median(r["frontend_cpu_ms_per_req"] for r in rs) for s, rs in side.items()}
        out.append({"concurrency": c, "base_req_s": med["base"], "new_req_s": med["new"],
                    "new_over_base": round(med["new"] / med["base"], 3),
                    "pair_ratios": [round(x, 3) for x in ratios],
                    "base_ttft_p50_ms": ttft["base"], "new_ttft_p50_ms": ttft["new"],
                    "base_cpu_ms_per_req": cpu["base"], "new_cpu_ms_per_req": cpu["new"],
                    "cpu_new_over_base": round(cpu["new"] / cpu["base"], 3),
                    "errors": sum(r["errors"] for rs in side.values() for r in rs)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="77fe6f6")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    base_sha, head_sha = git("rev-parse", "--short", a.base), git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="shoal-ab-") as tmp:
        work = Path(tmp)
        base_tree = export(a.base, work / "base")
        model = model_dir(work)
        nats = NatsServer(work / "nats", log_file=work / "nats.log")
        nats.start()
        os.sched_setaffinity(nats.proc.pid, {0})
        common = ["--nats-url", nats.url, "--namespace", "bench", "--log-level", "warning"]
        worker = spawn("worker", "decode", [*common, "--engine", "mock", "--model-path", str(model),
                                            "--served-model-name", "tiny", "--speedup-ratio", "1000",
                                            "--max-num-seqs", "256"], work)
        procs = [worker]
        try:
            os.sched_setaffinity(worker.pid, {0})
            worker.wait_ready(120)
            base_fe, base_url = frontend("frontend-base", common, work, base_tree)
            procs.append(base_fe)
            new_fe, new_url = frontend("frontend-new", common, work, ROOT)
            procs.append(new_fe)
            time.sleep(1.0)
            for url in (base_url, new_url):
                drive(url, "tiny", 8, 200, "warmup")
            pids = {"base": base_fe.pid, "new": new_fe.pid}
            for rnd in range(a.rounds):
                for c in a.concurrency:
                    for side, url in (("base", base_url), ("new", new_url)):
                        before = cpu_seconds(pids)[side]
                        r = drive(url, "tiny", c, a.requests, f"{side} c={c}")
                        cpu_ms = 1000 * (cpu_seconds(pids)[side] - before) / max(1, r["done"])
                        r.update(side=side, round=rnd, rev=base_sha if side == "base" else head_sha,
                                 frontend_cpu_ms_per_req=round(cpu_ms, 3))
                        rows.append(r)
                        print(json.dumps(r), flush=True)
        finally:
            for p in reversed(procs):
                p.stop()
            nats.stop()
    result = summary(rows, a.concurrency)
    for r in result:
        print(json.dumps(r), flush=True)
    machine = f"{platform.node()}: {os.cpu_count()} cores; SUT pinned to core 0, loadgen to core 1"
    if not a.no_report:
        raw = ROOT / "docs" / "bench" / f"frontend_ab_{base_sha}_{head_sha}.jsonl"
        meta = {"base": base_sha, "head": head_sha, "head_dirty": dirty, "machine": machine, "argv": sys.argv[1:]}
        raw.write_text("\n".join(json.dumps(x) for x in [meta, *rows]) + "\n")
        append_report(f"Frontend before/after: {base_sha} vs {head_sha}{' (+ uncommitted)' if dirty else ''} "
                      "(mock worker, alternating pairs)",
                      " ".join(["python -m tests.bench.bench_frontend_ab", *sys.argv[1:]]), result,
                      f"{machine}; raw: docs/bench/{raw.name}")
    slow = [r for r in result if r["new_over_base"] < 1 - a.tolerance or r["cpu_new_over_base"] > 1 + a.tolerance]
    if slow:
        print(f"FAIL: the new frontend is slower than {base_sha}: {slow}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
