"""Conditional disaggregation on a 90% short / 10% long prompt mix (real nats-server, reference engine,
prefill + decode worker, KV over NIXL, real HTTP, streaming).

python -m tests.bench.bench_disagg_local [--requests 100] [--no-report]

The same seeded mix twice: always remote (`--disagg-local-prefill-tokens 0`, the default) and conditional
(`--disagg-local-prefill-tokens LOCAL`, so the short prompts are prefilled on the decode worker and the
long ones still remotely). Two clients, closed loop; TTFT of each class and the decode worker's
`shoal_disagg_prefill_path_total`. Checks: short-prompt TTFT p50 at least 30% lower than always remote;
long-prompt TTFT p50 no worse (within 10%, the run-to-run noise on this box). Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from shared.cluster.procs import spawn
from shared.model.tiny import make_tiny
from tests.bench.loadgen import percentile
from tests.bench.local_cluster import bench_cluster
from tests.bench.routing_results import save
from tests.metrics import samples

SHORT, LONG, LOCAL = (16, 48), 1024, 128  # prompt tokens; --disagg-local-prefill-tokens of the conditional run
WORKER = ["--engine", "reference", "--num-blocks", "4096", "--page-size", "16", "--disaggregation-mode", "decode"]
MAX_TOKENS = 4


def workload(n: int) -> list[tuple[str, list[int]]]:
    rng = random.Random(90)
    out = []
    for _ in range(n):
        long = rng.random() < 0.1
        k = LONG if long else rng.randrange(*SHORT)
        out.append(("long" if long else "short", [rng.randrange(3, 250) for _ in range(k)]))
    return out


async def run(url: str, model: str, reqs: list[tuple[str, list[int]]], clients: int = 2) -> dict[str, list[float]]:
    ttft: dict[str, list[float]] = {}
    todo = list(enumerate(reqs))

    async def client(s: aiohttp.ClientSession) -> None:
        while todo:
            i, (cls, prompt) = todo.pop(0)
            body = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "stream": True, "temperature": 0}
            t0 = time.perf_counter()
            async with s.post(url + "/v1/completions", json=body) as r:
                assert r.status == 200, await r.text()
                first = None
                async for raw in r.content:
                    if first is None and raw.startswith(b"data: {") and json.loads(raw[6:])["choices"]:
                        first = (time.perf_counter() - t0) * 1000
            if i >= clients:  # each client's first request warms up
                ttft.setdefault(cls, []).append(first or 0.0)

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(client(s) for _ in range(clients)))
    return ttft


def paths(proc: Any) -> dict[str, int]:
    got = samples(proc)
    return {f"{dict(labels)['path']}/{dict(labels)['reason']}": int(v) for (name, labels), v in got.items()
            if name == "shoal_disagg_prefill_path_total"}


def r1(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    reqs = workload(a.requests)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-dl-") as tmp:
        work = Path(tmp)
        model = make_tiny(work / "tiny")
        for mode, local in (("always remote", 0), ("conditional", LOCAL)):
            ns = "remote" if not local else "cond"
            with bench_cluster(work, model, [*WORKER, "--disagg-local-prefill-tokens", str(local)],
                               namespace=ns) as c:
                pre = spawn(f"{ns}-prefill", "prefill", ["--nats-url", c.nats.url, "--namespace", ns,
                                                         "--log-level", "warning", "--model-path", str(model),
                                                         "--engine", "reference", "--num-blocks", "4096",
                                                         "--page-size", "16"], work)
                try:
                    pre.wait_ready(120)
                    ttft = asyncio.run(run(c.url, model.name, reqs))
                    rows.append({"mode": mode, "local_prefill_tokens": local,
                                 "short_requests": len(ttft.get("short", [])),
                                 "short_ttft_p50_ms": r1(percentile(ttft.get("short", []), 50)),
                                 "short_ttft_p99_ms": r1(percentile(ttft.get("short", []), 99)),
                                 "long_requests": len(ttft.get("long", [])),
                                 "long_ttft_p50_ms": r1(percentile(ttft.get("long", []), 50)),
                                 "long_ttft_p99_ms": r1(percentile(ttft.get("long", []), 99)),
                                 "paths": paths(c.workers[0])})
                    print(rows[-1], flush=True)
                finally:
                    pre.stop()
    remote, cond = rows
    checks = {"short TTFT p50 >= 30% lower than always remote":
                  cond["short_ttft_p50_ms"] <= 0.7 * remote["short_ttft_p50_ms"],
              "long TTFT p50 no worse (within 10%)": cond["long_ttft_p50_ms"] <= 1.1 * remote["long_ttft_p50_ms"]}
    print(checks)
    save("4_disagg_local", "4. Conditional disaggregation: 90% short / 10% long prompts",
         {"rows": rows, "short_prompt_tokens": f"{SHORT[0]}-{SHORT[1] - 1}", "long_prompt_tokens": LONG,
          "max_tokens": MAX_TOKENS, "worker": " ".join(WORKER), "clients": 2}, checks, scratch=a.no_report)
    if not all(checks.values()):
        print("FAIL:", [k for k, ok in checks.items() if not ok], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
