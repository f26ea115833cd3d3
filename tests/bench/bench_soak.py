"""Soak: steady load on a local cluster; RSS and open file descriptors of every process over time.

python -m tests.bench.bench_soak [--minutes 10] [--engine mock] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from shared.model.tiny import make_tiny
from tests.bench.local_cluster import bench_cluster
from tests.bench.report import append_report


def sample(pids: dict[str, int]) -> dict[str, tuple[float, int]]:
    out = {}
    for name, pid in pids.items():
        p = psutil.Process(pid)
        out[name] = (round(p.memory_info().rss / 2**20, 1), p.num_fds())
    return out


async def load(url: str, model: str, conc: int, until: float, stats: dict[str, int]) -> None:
    async with aiohttp.ClientSession() as s:
        async def client(i: int) -> None:
            n = 0
            while time.monotonic() < until:
                n += 1
                body = {"model": model, "messages": [{"role": "user", "content": f"user {i} turn {n} " * 20}],
                        "max_tokens": 32, "stream": n % 2 == 0}
                try:
                    async with s.post(url + "/v1/chat/completions", json=body) as r:
                        await r.read()
                        stats[str(r.status)] = stats.get(str(r.status), 0) + 1
                except aiohttp.ClientError:
                    stats["client_error"] = stats.get("client_error", 0) + 1
        await asyncio.gather(*(client(i) for i in range(conc)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--engine", default="mock")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    stats: dict[str, int] = {}
    samples: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="shoal-soak-") as tmp:
        work = Path(tmp)
        worker = ["--engine", a.engine, "--speedup-ratio", "100"]
        with bench_cluster(work, make_tiny(work / "tiny"), worker) as c:
            pids = c.pids
            until = time.monotonic() + a.minutes * 60

            async def run() -> None:
                task = asyncio.create_task(load(c.url, "tiny", a.concurrency, until, stats))
                while not task.done():
                    samples.append({"t": round(a.minutes * 60 - (until - time.monotonic())), **sample(pids)})
                    print(json.dumps(samples[-1]), flush=True)
                    await asyncio.sleep(min(30, a.minutes * 6))
                await task

            asyncio.run(run())
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    summary = {"label": "soak", "minutes": a.minutes, "requests": stats,
               "rss_mib_first_last": {k: (first[k][0], last[k][0]) for k in pids},
               "fds_first_last": {k: (first[k][1], last[k][1]) for k in pids}}
    print(json.dumps(summary))
    if not a.no_report:
        append_report("Soak: RSS and file descriptors under steady load",
                      " ".join(["python -m tests.bench.bench_soak", *sys.argv[1:]]), [summary],
                      f"{platform.node()}: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
