"""The planner under a load step: mock workers at a fixed speed, the local connector, online capacity.

python -m tests.bench.bench_planner [--rate 2] [--ttft-p90-ms 250] [--no-report]

Open-loop (Poisson) streamed completions at --rate for --warm-s, then 4x the rate until the TTFT p90
of the requests sent in a --window-s window is under the target again (time to recover printed),
then the first rate again until the planner has drained its extra workers. Exits non-zero when the
TTFT does not recover, the workers do not drain back to --min-workers, or any request fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from shared.cluster.procs import spawn
from shared.model.tiny import make_tiny
from tests.bench.loadgen import Stats, make_prompts, one, percentile
from tests.bench.local_cluster import bench_cluster
from tests.bench.report import append_report


@dataclass
class Sent:
    at: float  # seconds since the start
    ttft: float | None  # None: the request failed
    error: str | None = None


class Load:
    """Poisson arrivals at a rate that can change; every request's start and TTFT."""

    def __init__(self, url: str, model: str, max_tokens: int, seed: int) -> None:
        self.url = url + "/v1/chat/completions"
        self.model = model
        self.max_tokens = max_tokens
        self.rng = random.Random(seed)
        self.prompts = make_prompts(512, 24, 0, 0, seed)
        self.rate = 0.0
        self.sent: list[Sent] = []
        self.t0 = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self, s: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.rng.expovariate(self.rate))
            task = asyncio.create_task(self._one(s))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.gather(*self._tasks)

    async def _one(self, s: aiohttp.ClientSession) -> None:
        at = self.now()
        body = {"model": self.model, "messages": [{"role": "user", "content": self.rng.choice(self.prompts)}],
                "max_tokens": self.max_tokens, "min_tokens": self.max_tokens, "stream": True,
                "stream_options": {"include_usage": True}}
        st = Stats()
        await one(s, self.url, body, st)
        self.sent.append(Sent(at, st.ttft[0] if st.done else None, st.sample_error))

    def ttft_p90(self, since: float, until: float) -> float | None:
        return percentile([r.ttft for r in self.sent if since <= r.at < until and r.ttft is not None], 90)


def live_workers(url: str) -> int:
    with urllib.request.urlopen(url + "/health", timeout=5) as r:
        return json.loads(r.read())["instances"]


async def scenario(a: argparse.Namespace, url: str) -> dict:
    load = Load(url, "tiny", a.max_tokens, a.seed)
    target = a.ttft_p90_ms / 1000
    timeline: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            n = await asyncio.to_thread(live_workers, url)
            if not timeline or timeline[-1][1] != n:
                timeline.append((round(load.now(), 1), n))
            await asyncio.sleep(0.5)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        load.rate = a.rate
        tasks = [asyncio.create_task(load.run(s, stop)), asyncio.create_task(watch())]
        await asyncio.sleep(a.warm_s)
        stepped = load.now()
        load.rate = 4 * a.rate
        recovered, worst = None, 0.0
        while recovered is None and load.now() - stepped < a.recover_timeout_s:
            await asyncio.sleep(0.5)
            # a window of arrivals after the step, old enough that its requests have had a first token
            end = load.now() - a.window_s
            start = end - a.window_s
            p90 = load.ttft_p90(start, end) if start >= stepped else None
            worst = max(worst, p90 or 0.0)
            if p90 is not None and p90 <= target and max(n for _, n in timeline) > a.min_workers:
                recovered = start - stepped
        load.rate = a.rate
        down_at = load.now()
        drained = None
        while drained is None and load.now() - down_at < a.drain_timeout_s:
            await asyncio.sleep(0.5)
            if timeline[-1][1] == a.min_workers:
                drained = timeline[-1][0] - down_at
        await asyncio.sleep(a.window_s)  # requests sent meanwhile finish on the remaining worker
        stop.set()
        await asyncio.gather(*tasks)
    failed = [r for r in load.sent if r.ttft is None]
    before = load.ttft_p90(a.warm_s / 2, stepped)
    return {"rate": a.rate, "step": 4, "ttft_target_ms": a.ttft_p90_ms, "requests": len(load.sent),
            "failed": len(failed), "sample_error": failed[0].error if failed else None,
            "ttft_p90_before_ms": _ms(before), "ttft_p90_worst_after_step_ms": _ms(worst),
            "time_to_recover_s": None if recovered is None else round(recovered, 1),
            "peak_workers": max(n for _, n in timeline),
            "drained_after_s": None if drained is None else round(drained, 1),
            "workers_timeline": timeline}


def decisions(log: Path) -> list[dict]:
    """The planner's changes, from its JSON log lines."""
    out = []
    for line in log.read_text().splitlines():
        if '"planner_decision"' in line:
            d = json.loads(line)
            keys = ("timestamp", "action", "live", "desired", "reason", "ttft_p90_ms", "waiting")
            out.append({k: d.get(k) for k in keys})
    return out


def _ms(s: float | None) -> float | None:
    return None if s is None else round(s * 1000, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2.0, help="requests/s before and after the step")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--ttft-p90-ms", type=float, default=250)
    ap.add_argument("--interval", type=float, default=2.0, help="the planner's")
    ap.add_argument("--min-workers", type=int, default=1)
    ap.add_argument("--warm-s", type=float, default=16)
    ap.add_argument("--window-s", type=float, default=3)
    ap.add_argument("--recover-timeout-s", type=float, default=90)
    ap.add_argument("--drain-timeout-s", type=float, default=60)
    ap.add_argument("--worker-args", default="--engine mock --speedup-ratio 0.25 --max-num-seqs 2",
                    help="the mock workers' fixed speed: 20 ms a step, two requests at a time")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-planner-") as tmp:
        work = Path(tmp)
        model = make_tiny(work / "tiny")
        with bench_cluster(work, model, [], workers=0, namespace="plan") as c:
            common = ["--nats-url", c.nats.url, "--namespace", "plan"]
            planner = spawn("planner", "planner", [
                *common, "--connector", "local", "--worker-log-dir", str(work), "--interval", str(a.interval),
                "--worker-args", f"{a.worker_args} --model-path {model} --log-level warning",
                "--ttft-p90-ms", str(a.ttft_p90_ms), "--itl-p90-ms", "1000", "--min-workers", str(a.min_workers),
                "--log-json"],
                work)
            try:
                planner.wait_ready(30)
                t0 = time.monotonic()
                while live_workers(c.url) < a.min_workers:
                    if time.monotonic() - t0 > 60:
                        raise SystemExit(f"the planner started no worker:\n{planner.tail()}")
                    time.sleep(0.2)
                row = asyncio.run(scenario(a, c.url))
                row["decisions"] = decisions(planner.log_path)
            finally:
                planner.stop(150)
    print(json.dumps(row))
    checks = {"recovered": row["time_to_recover_s"] is not None, "drained": row["drained_after_s"] is not None,
              "no_failures": row["failed"] == 0}
    print(f"time to recover: {row['time_to_recover_s']} s; drained back to {a.min_workers} worker(s) after "
          f"{row['drained_after_s']} s; failed requests: {row['failed']}; checks: {checks}")
    if not a.no_report:
        append_report("Planner: a 4x load step on mock workers (local connector, capacity learnt online)",
                      " ".join(["python -m tests.bench.bench_planner", *sys.argv[1:]]), [row],
                      f"{platform.node()}: {os.cpu_count()} cores")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
