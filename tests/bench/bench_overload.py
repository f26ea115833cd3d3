"""Overload: 10x the cluster's capacity for 30 s, then normal load.

python -m tests.bench.bench_overload [--seconds 30]

Reports status codes (429/503 expected with Retry-After, plus completions), peak RSS of
every process, and how soon after the storm normal requests succeed again.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def storm(url: str, model: str, clients: int, seconds: float, stats: dict[str, int]) -> None:
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def client() -> None:
            while time.monotonic() < end:
                body = {"model": model, "messages": [{"role": "user", "content": "overload " * 40}],
                        "max_tokens": 64, "stream": True}
                try:
                    async with s.post(url + "/v1/chat/completions", json=body) as r:
                        await r.read()
                        key = str(r.status) + ("+retry-after" if "Retry-After" in r.headers else "")
                        stats[key] = stats.get(key, 0) + 1
                        if r.status != 200:
                            await asyncio.sleep(0.05)
                except aiohttp.ClientError as e:
                    stats[type(e).__name__] = stats.get(type(e).__name__, 0) + 1
        await asyncio.gather(*(client() for _ in range(clients)))


async def recovery(url: str, model: str) -> float:
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s:
        while True:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                await r.read()
                if r.status == 200:
                    return time.monotonic() - t0
            await asyncio.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    stats: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-ovl-") as tmp:
        work = Path(tmp)
        # capacity: 8 running + 8 waiting on the worker, 64 in flight at the frontend
        worker = ["--engine", "mock", "--speedup-ratio", "20", "--max-num-seqs", "8", "--max-waiting", "8"]
        with bench_cluster(work, make_tiny(work / "tiny"), worker, ["--max-inflight", "64"]) as c:
            peak = dict.fromkeys(c.pids, 0.0)

            async def run() -> float:
                task = asyncio.create_task(storm(c.url, "tiny", 160, a.seconds, stats))
                while not task.done():
                    for k, pid in c.pids.items():
                        peak[k] = max(peak[k], psutil.Process(pid).memory_info().rss / 2**20)
                    await asyncio.sleep(0.5)
                await task
                return await recovery(c.url, "tiny")

            recovered = asyncio.run(run())
    row = {"label": "overload 10x", "seconds": a.seconds, "clients": 160, "capacity": "16 at the worker",
           "responses": stats, "peak_rss_mib": {k: round(v, 1) for k, v in peak.items()},
           "recovered_after_s": round(recovered, 3)}
    print(row)
    if not a.no_report:
        command = " ".join(["python -m tests.bench.bench_overload", *sys.argv[1:]])
        append_report("Overload: 160 clients against a capacity of 16", command, [row],
                      f"{platform.node()}: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
