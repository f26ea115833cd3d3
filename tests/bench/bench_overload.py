"""Overload: 10x the cluster's capacity for 30 s, then normal load.

python -m tests.bench.bench_overload [--seconds 30] [--busy]

Reports status codes (429/503 expected with Retry-After, plus completions), how long a refusal
took (p50/p99), peak RSS of every process, and how soon after the storm normal requests succeed
again. Default: capacity is the in-flight caps (the worker's queue, the frontend's
--max-inflight): refusals are 429. `--busy`: capacity is the frontend's busy threshold
(--active-decode-blocks-threshold) on two workers: refusals are 503, and the run exits 1
when their p99 is 50 ms or more.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from shared.model.tiny import make_tiny
from tests.bench.loadgen import percentile
from tests.bench.local_cluster import bench_cluster
from tests.bench.report import append_report

REFUSAL_P99_BAR_MS = 50.0
# --busy: two workers of 256 blocks, busy past half of them; a request's prompt is 20 blocks, so each
# worker takes requests while at or under 128 blocks: 7 of them (0, 20, ..., 120 -> 140). Decode steps of
# 20 ms, as on a GPU: 16 tokens take about 0.35 s, so 10x the served rate is a few hundred requests/s.
BUSY_WORKER = ["--num-blocks", "256", "--page-size", "16", "--speedup-ratio", "0.25"]
BUSY_FRONTEND = ["--router-mode", "kv", "--active-decode-blocks-threshold", "0.5"]
BUSY_PROMPT_TOKENS, BUSY_CAPACITY = 320, 14


def chat_body(model: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "overload " * 40}],
                                    "max_tokens": 64, "stream": True}


def token_body(model: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A prompt of exactly BUSY_PROMPT_TOKENS ids, none shared with another request's."""
    prompt = [rng.randrange(3, 250) for _ in range(BUSY_PROMPT_TOKENS)]
    return "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 16, "stream": True}


@dataclass
class Tally:
    stats: dict[str, int] = field(default_factory=dict)
    refused_ms: list[float] = field(default_factory=list)  # how long each 429/503 took

    async def send(self, s: aiohttp.ClientSession, url: str, request: tuple[str, dict[str, Any]]) -> int:
        t0 = time.perf_counter()
        try:
            async with s.post(url + request[0], json=request[1]) as r:
                await r.read()
        except aiohttp.ClientError as e:
            self.stats[type(e).__name__] = self.stats.get(type(e).__name__, 0) + 1
            return 0
        if r.status in (429, 503):
            self.refused_ms.append((time.perf_counter() - t0) * 1000)
        key = str(r.status) + ("+retry-after" if "Retry-After" in r.headers else "")
        self.stats[key] = self.stats.get(key, 0) + 1
        return r.status


async def storm(url: str, model: str, clients: int, seconds: float, tally: Tally) -> None:
    """`clients` loops sending requests for `seconds`, 50 ms apart after a refusal."""
    end = time.monotonic() + seconds
    rng = random.Random(0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def client() -> None:
            while time.monotonic() < end:
                if await tally.send(s, url, chat_body(model, rng)) != 200:
                    await asyncio.sleep(0.05)
        await asyncio.gather(*(client() for _ in range(clients)))


async def arrivals(url: str, model: str, rate: float, seconds: float, tally: Tally) -> None:
    """Open loop: a request every 1/`rate` s for `seconds`, whatever the answers."""
    rng = random.Random(0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        sent: set[asyncio.Task[int]] = set()
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            task = asyncio.create_task(tally.send(s, url, token_body(model, rng)))
            sent.add(task)
            task.add_done_callback(sent.discard)
        await asyncio.gather(*sent)


async def solo_seconds(url: str, model: str) -> float:
    """How long one request takes alone: the cluster serves capacity / this many requests a second."""
    async with aiohttp.ClientSession() as s:
        t0 = time.perf_counter()
        assert await Tally().send(s, url, token_body(model, random.Random(1))) == 200
        return time.perf_counter() - t0


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
    ap.add_argument("--busy", action="store_true", help="capacity from the busy threshold: 503s, p99 bar")
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    tally = Tally()
    if a.busy:
        worker, frontend, workers, capacity = BUSY_WORKER, BUSY_FRONTEND, 2, BUSY_CAPACITY
        label = f"{capacity} under the busy threshold (2 workers)"
    else:  # 8 running + 8 waiting on the worker, 64 in flight at the frontend
        worker = ["--speedup-ratio", "20", "--max-num-seqs", "8", "--max-waiting", "8"]
        frontend, workers, capacity, label = ["--max-inflight", "64"], 1, 16, "16 at the worker"
    load: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-ovl-") as tmp:
        work = Path(tmp)
        with bench_cluster(work, make_tiny(work / "tiny"), ["--engine", "mock", *worker], frontend,
                           workers=workers) as c:
            peak = dict.fromkeys(c.pids, 0.0)

            async def run() -> float:
                if a.busy:  # 10x the requests per second the cluster serves
                    solo = await solo_seconds(c.url, "tiny")
                    load.update(rate_per_s=round(10 * capacity / solo, 1), solo_request_s=round(solo, 3))
                    task = asyncio.create_task(arrivals(c.url, "tiny", load["rate_per_s"], a.seconds, tally))
                else:  # 10x as many clients as the cluster holds
                    load.update(clients=10 * capacity)
                    task = asyncio.create_task(storm(c.url, "tiny", load["clients"], a.seconds, tally))
                while not task.done():
                    for k, pid in c.pids.items():
                        peak[k] = max(peak[k], psutil.Process(pid).memory_info().rss / 2**20)
                    await asyncio.sleep(0.5)
                await task
                return await recovery(c.url, "tiny")

            recovered = asyncio.run(run())
    p50, p99 = (None if v is None else round(v, 2) for v in (percentile(tally.refused_ms, q) for q in (50, 99)))
    row = {"label": "busy 10x" if a.busy else "overload 10x", "seconds": a.seconds, **load, "capacity": label,
           "responses": tally.stats, "refused_ms": {"n": len(tally.refused_ms), "p50": p50, "p99": p99},
           "peak_rss_mib": {k: round(v, 1) for k, v in peak.items()}, "recovered_after_s": round(recovered, 3)}
    print(row)
    if not a.no_report:
        command = " ".join(["python -m tests.bench.bench_overload", *sys.argv[1:]])
        title = "Busy thresholds: 10x the served rate" if a.busy else "Overload: 160 clients against a capacity of 16"
        append_report(title, command, [row], f"{platform.node()}: {os.cpu_count()} cores")
    if a.busy and (p99 is None or p99 >= REFUSAL_P99_BAR_MS):
        print(f"FAIL: 503 p99 {p99} ms, the bar is < {REFUSAL_P99_BAR_MS:g} ms", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
