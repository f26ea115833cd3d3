"""Admission queue under 3x overload (real nats-server, two mock workers, real HTTP, streaming).

python -m tests.bench.bench_admission [--seconds 20] [--no-report]

Two mock workers (20 ms decode steps, 640-token prompts) behind a frontend with a busy threshold and
`--router-queue-size`. First the unloaded TTFT of a high-priority request. Then, for `--seconds`,
requests arrive open loop at 3x the rate the cluster serves (measured first, closed loop): 5% with
`priority: 10`, the rest priority 0; the high ones' TTFT p99 must stay within 2x the unloaded p99
while the low ones queue (their wait) and are shed (503 + Retry-After). Last, two tenants (header
x-tenant) offer 4:1 of the same 3x load at one priority; the served throughput of each gives Jain's
fairness index, which must be >= 0.9. The workers prefill in 128-token chunks (SGLang's
--chunked-prefill-size). As a control, one mock engine in-process (admission_engine.py) takes half the
overload rate with and without chunks: the engine's own share of the high class's TTFT. Exits 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from shared.model.tiny import make_tiny
from tests.bench.admission_engine import engine_alone
from tests.bench.loadgen import percentile
from tests.bench.local_cluster import bench_cluster
from tests.bench.routing_results import save

WORKER = ["--engine", "mock", "--num-blocks", "512", "--page-size", "16", "--speedup-ratio", "0.25",
          "--max-num-batched-tokens", "640", "--chunked-prefill-size", "128"]  # CHUNK
CHUNK = 128  # 640-token prompts in 5 chunks: a priority-10 arrival waits for one chunk or one decode step
# (SGLang: prefill and decode steps apart), not for a whole prompt's prefill
QUEUE = 32
FRONTEND = ["--router-mode", "kv", "--active-decode-blocks-threshold", "0.5", "--router-queue-size", str(QUEUE),
            "--router-priority-reserve", "0.4",
            "--tenant-header", "x-tenant"]
PROMPT_TOKENS, MAX_TOKENS = 640, 32  # 41 blocks: 6 requests per worker under 256 of 512 (4 of priority 0)
HIGH_SHARE, OVERLOAD = 0.05, 3.0


@dataclass
class Tally:
    ttft: dict[str, list[float]] = field(default_factory=dict)
    status: dict[str, dict[str, int]] = field(default_factory=dict)
    served_at: dict[str, list[float]] = field(default_factory=dict)

    def count(self, cls: str, key: str) -> None:
        c = self.status.setdefault(cls, {})
        c[key] = c.get(key, 0) + 1


def body(rng: random.Random, priority: int) -> dict[str, Any]:
    prompt = [rng.randrange(3, 250) for _ in range(PROMPT_TOKENS)]
    return {"model": "tiny", "prompt": prompt, "max_tokens": MAX_TOKENS, "stream": True, "priority": priority}


async def send(s: aiohttp.ClientSession, url: str, b: dict[str, Any], cls: str, tally: Tally,
               headers: dict[str, str] | None = None) -> None:
    t0 = time.perf_counter()
    try:
        async with s.post(url + "/v1/completions", json=b, headers=headers or {}) as r:
            if r.status != 200:
                await r.read()
                tally.count(cls, f"{r.status}" + ("+retry-after" if "Retry-After" in r.headers else ""))
                return
            first = None
            async for line in r.content:
                if first is None and line.startswith(b"data: {"):
                    chunk = json.loads(line[6:])
                    if chunk.get("choices") and chunk["choices"][0].get("text"):
                        first = time.perf_counter() - t0
            tally.count(cls, "200")
            tally.served_at.setdefault(cls, []).append(time.monotonic())
            if first is not None:
                tally.ttft.setdefault(cls, []).append(first * 1000)
    except aiohttp.ClientError as e:
        tally.count(cls, type(e).__name__)


async def solo(url: str, n: int) -> list[float]:
    tally = Tally()
    rng = random.Random(1)
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            await send(s, url, body(rng, 10), "high", tally)
            await asyncio.sleep(0.05)
    return tally.ttft["high"]


async def open_loop(url: str, rate: float, seconds: float, pick: Any) -> Tally:
    """A request every 1/rate s; `pick(i, rng)` -> (class, body, headers)."""
    tally = Tally()
    rng = random.Random(0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            cls, b, h = pick(i, rng)
            t = asyncio.create_task(send(s, url, b, cls, tally, h))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return tally


async def served_rate(url: str, seconds: float, clients: int = 24) -> float:
    """Requests a second the cluster completes with more clients than it admits (closed loop, priority 0)."""
    tally = Tally()
    end = time.monotonic() + seconds
    rng = random.Random(3)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def client() -> None:
            while time.monotonic() < end:
                await send(s, url, body(rng, 0), "x", tally)
        await asyncio.gather(*(client() for _ in range(clients)))
    return len(tally.served_at.get("x", [])) / seconds


def queue_wait(url: str) -> dict[str, Any]:
    """The frontend's shoal_router_queue_wait_seconds: count and mean wait by priority and outcome."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for kind, into in (("_sum{", sums), ("_count{", counts)):
            if line.startswith("shoal_router_queue_wait_seconds" + kind):
                labels, value = line[line.index("{") + 1:line.index("}")], float(line.rsplit(" ", 1)[1])
                into[labels.replace('"', "")] = value
    return {k: {"n": int(counts[k]), "mean_ms": round(1000 * sums[k] / counts[k], 1) if counts[k] else None}
            for k in counts}


def jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)) if any(xs) else 0.0


def p(xs: list[float] | None, q: float) -> float | None:
    v = percentile(xs or [], q)
    return None if v is None else round(v, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-adm-") as tmp:
        work = Path(tmp)
        with bench_cluster(work, make_tiny(work / "tiny"), WORKER, FRONTEND, workers=2) as c:
            async def run() -> tuple[list[float], float, Tally, Tally]:
                unloaded = await solo(c.url, 40)
                rate = OVERLOAD * await served_rate(c.url, 4.0)

                def priorities(i: int, rng: random.Random) -> tuple[str, dict[str, Any], dict[str, str]]:
                    high = rng.random() < HIGH_SHARE
                    return ("high", body(rng, 10), {}) if high else ("low", body(rng, 0), {})

                mixed = await open_loop(c.url, rate, a.seconds, priorities)
                waits.update(queue_wait(c.url))
                await asyncio.sleep(1.0)

                def tenants(i: int, rng: random.Random) -> tuple[str, dict[str, Any], dict[str, str]]:
                    t = "A" if rng.random() < 0.8 else "B"
                    return t, body(rng, 0), {"x-tenant": t}

                fair = await open_loop(c.url, rate, a.seconds, tenants)
                return unloaded, rate, mixed, fair

            waits: dict[str, Any] = {}
            unloaded, rate, mixed, fair = asyncio.run(run())
    base_p99 = p(unloaded, 99) or 0.0
    high_p99 = p(mixed.ttft.get("high"), 99)
    served = {t: len(fair.served_at.get(t, [])) / a.seconds for t in ("A", "B")}
    fairness = round(jain(list(served.values())), 3)
    low = mixed.status.get("low", {})
    rows = [
        {"run": "unloaded, priority 10", "requests": len(unloaded), "ttft_p50_ms": p(unloaded, 50),
         "ttft_p99_ms": base_p99},
        {"run": f"{OVERLOAD:g}x overload, priority 10 ({HIGH_SHARE:.0%})", "rate_per_s": round(rate, 1),
         "responses": mixed.status.get("high", {}), "ttft_p50_ms": p(mixed.ttft.get("high"), 50),
         "ttft_p99_ms": high_p99},
        {"run": f"{OVERLOAD:g}x overload, priority 0", "rate_per_s": round(rate, 1), "responses": low,
         "ttft_p50_ms": p(mixed.ttft.get("low"), 50), "ttft_p99_ms": p(mixed.ttft.get("low"), 99),
         "queue_wait": waits},
        {"run": f"{OVERLOAD:g}x overload, tenants A:B offered 4:1", "rate_per_s": round(rate, 1),
         "responses": fair.status, "served_per_s": {k: round(v, 2) for k, v in served.items()},
         "jain_fairness": fairness},
    ]
    # the control: one engine in-process at its share of the same load, with and without chunked prefill
    alone = [asyncio.run(engine_alone(chunk, rate / 2, a.seconds, HIGH_SHARE, PROMPT_TOKENS, MAX_TOKENS))
             for chunk in (CHUNK, 0)]
    rows += alone
    shed = sum(v for k, v in low.items() if k.startswith("503"))
    checks = {"high-priority TTFT p99 <= 2x unloaded": high_p99 is not None and high_p99 <= 2 * base_p99,
              "low priority queued (served with TTFT above the high class) and shed (503 + Retry-After)":
                  shed > 0 and low.get("200", 0) > 0 and "503" not in low,
              "Jain fairness of served throughput >= 0.9": fairness >= 0.9,
              "engine alone, chunked prefill: high TTFT p99 <= 2x unloaded":
                  (alone[0]["p99_over_unloaded"] or 99) <= 2.0}
    for r in rows:
        print(r)
    print(checks)
    save("3_admission", "3. Admission queue: priorities and tenant fairness under 3x overload",
         {"rows": rows, "queue_size": QUEUE, "frontend": " ".join(FRONTEND), "worker": " ".join(WORKER),
          "prompt_tokens": PROMPT_TOKENS, "max_tokens": MAX_TOKENS}, checks, scratch=a.no_report)
    if not all(checks.values()):
        print("FAIL:", [k for k, ok in checks.items() if not ok], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
