"""`just bench`: run shoal's CPU benchmarks one after another; each appends its results to docs/BENCHMARKS.md.

    just bench                      # frontend, router, router-sim, router-peer, reference, lora, transfer,
                                    # overload, busy, agents, planner, fuzz
    just bench --only router        # one or more by name
    just bench --quick              # small sizes, results and plots in a scratch folder, not docs/ (a smoke run)
    just bench --with soak          # add the 10-minute soak (--with diffusion: the diffusion engine's steps sweep)
    just bench --only fleet         # 10 to 1,000 simulated workers (~15 min): docs/FLEET.md
    just bench --list

The GPU benchmark (shoal on SGLang against SGLang's own server) runs on the lent GPU machine:
deploy/gpu/prove.sh, then `python -m tests.bench.bench_sglang cluster.log` (docs/SGLANG.md).
The frontend and router-peer benchmarks run NVIDIA Dynamo side by side when --dynamo-venv (or
DYNAMO_VENV) names a virtual environment with Dynamo installed (../shared/bench/ sets one up).
Afterwards the plots (tests/bench/plots.py) are drawn from the results: docs/plots/*.png from
docs/BENCHMARKS.md, or, with --quick, beside the scratch BENCHMARKS.md the quick run wrote.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.plots import write_plots
from tests.bench.report import DOC, DOC_ENV

ROOT = Path(__file__).resolve().parents[2]

# name -> (module, full-run arguments, quick-run arguments)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "frontend": ("tests.bench.bench_frontend", [], ["--concurrency", "4", "16", "--requests", "200"]),
    "frontend-ab": ("tests.bench.bench_frontend_ab", [], ["--requests", "200", "--rounds", "1", "--tolerance", "0.5",
                                                         "--no-report"]),
    "router": ("tests.bench.bench_router", [], ["--skip-cluster", "--no-report"]),
    "router-sim": ("tests.bench.bench_router_sim", [], ["--requests", "400"]),
    "router-peer": ("tests.bench.bench_router_peer", [], ["--requests", "200"]),
    "reference": ("tests.bench.bench_reference", ["--append", "docs/BENCHMARKS.md"],
                  ["--requests", "4", "--max-tokens", "8"]),
    "transfer": ("tests.bench.bench_transfer", ["--report"], ["--blocks", "1", "16", "--repeats", "3"]),
    "overload": ("tests.bench.bench_overload", [], ["--seconds", "3", "--no-report"]),
    "busy": ("tests.bench.bench_overload", ["--busy"], ["--busy", "--seconds", "3", "--no-report"]),
    "soak": ("tests.bench.bench_soak", [], ["--minutes", "0.2", "--no-report"]),
    "lora": ("tests.bench.bench_lora", ["--append", "docs/BENCHMARKS.md"],
             ["--concurrency", "8", "--max-tokens", "8", "--repeats", "1", "--hidden-size", "64"]),
    "diffusion": ("tests.bench.bench_diffusion", ["--append", "docs/BENCHMARKS.md"],
                  ["--requests", "4", "--max-tokens", "16", "--steps", "1", "8", "--concurrency", "4"]),
    "agents": ("tests.bench.bench_agents", ["--append", "docs/BENCHMARKS.md"],
               ["--requests", "4", "--concurrency", "4", "--max-tokens", "8", "--rounds", "1"]),
    "planner": ("tests.bench.bench_planner", [], ["--warm-s", "8", "--no-report"]),
    "fleet": ("tests.bench.bench_fleet", [], ["--sizes", "10", "--cluster-sizes", "--steady-s", "5", "--requests-s",
                                              "4", "--churn-s", "6", "--no-report"]),
    # checks needing the `bench` extra (lm-eval; aiperf, best in its own venv: AIPERF=PATH); not in the default set
    "lm-eval": ("tests.bench.check_lm_eval", ["--record", "docs/bench/lm_eval_check.jsonl"], []),
    "aiperf-rerank": ("tests.bench.bench_aiperf_rerank", ["--record", "docs/bench/aiperf_rerank.jsonl"], []),
    "aiperf-messages": ("tests.bench.bench_aiperf_messages", ["--record", "docs/bench/aiperf_messages.jsonl"], []),
    "fuzz": ("tests.bench.bench_fuzz", ["--seconds", "120"], ["--seconds", "10"]),
    "load-feed": ("tests.bench.bench_load_feed", [], ["--reports", "2000", "--no-report"]),
    "sessions": ("tests.bench.bench_sessions", [], ["--sessions", "40", "--turns", "4", "--no-report"]),
    "admission": ("tests.bench.bench_admission", [], ["--seconds", "3", "--no-report"]),
    "router-scale": ("tests.bench.bench_router_scale", [], ["--sizes", "64:100000", "--no-report"]),
    "disagg-local": ("tests.bench.bench_disagg_local", [], ["--requests", "20", "--no-report"]),
    "scale-zero": ("tests.bench.bench_scale_zero", [], ["--idle", "1", "--burst", "4", "--no-report"]),
    "kv-tiers": ("tests.bench.bench_kv_tiers", [], ["--runs", "1", "--requests", "16", "--ratio-repeats", "2",
                                                   "--no-report"]),
}
DEFAULT = ["frontend", "frontend-ab", "router", "router-sim", "router-peer", "reference", "lora", "transfer",
           "overload", "busy", "agents", "planner", "fuzz", "load-feed", "sessions", "admission",
           "router-scale", "disagg-local", "scale-zero",
           "kv-tiers"]


def commands(names: list[str], quick: bool, dynamo_venv: str | None) -> list[tuple[str, list[str]]]:
    out = []
    for name in names:
        module, full, small = BENCHES[name]
        args = list(small if quick else full)
        if name in ("frontend", "router-peer") and dynamo_venv:
            args += ["--dynamo-venv", dynamo_venv]
        out.append((name, [sys.executable, "-m", module, *args]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run just these")
    ap.add_argument("--with", dest="extra", nargs="+", choices=sorted(BENCHES), default=[],
                    help="add these to the default set")
    ap.add_argument("--quick", action="store_true", help="small sizes; no results written")
    ap.add_argument("--dynamo-venv", default=os.environ.get("DYNAMO_VENV"))
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    names = a.only or DEFAULT + [n for n in a.extra if n not in DEFAULT]
    plan = commands(names, a.quick, a.dynamo_venv)
    if a.list:
        for name, cmd in plan:
            print(f"{name:10s} {' '.join(cmd[1:])}")
        return 0
    doc, plots = DOC, ROOT / "docs" / "plots"
    env = dict(os.environ)
    if a.quick:  # results (of the benches that report) and plots go to a scratch folder
        plots = Path(tempfile.mkdtemp(prefix="shoal-bench-quick-"))
        doc = plots / "BENCHMARKS.md"
        env[DOC_ENV] = str(doc)
    failed = []
    for name, cmd in plan:
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        print(f"=== {name}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    for path in write_plots(doc, plots):
        print(f"plot: {path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nresults appended to {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
