"""Scale from zero (real nats-server, frontend, planner with the local connector, mock workers, real HTTP).

python -m tests.bench.bench_scale_zero [--idle 3] [--no-report]

The planner starts with `--min-workers 0 --scale-to-zero-idle IDLE`: it starts one worker to learn the
model's card, parks the model and drains the worker after IDLE seconds. Then, from no workers: the
first request (the frontend waits up to `--cold-start-wait`) must complete, and its wait is reported
from the frontend's `shoal_cold_start_wait_seconds`; a burst follows on the warm worker; the planner
must drain back to zero after the idle period with no failed request; a second cold start repeats it.
Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import spawn
from shared.model.tiny import make_tiny
from tests.bench.routing_results import save
from tests.metrics import samples

WAIT_S = 60.0


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/health", timeout=5) as r:
        return json.loads(r.read())


def until(what: str, check: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - t0


async def complete(s: aiohttp.ClientSession, url: str, model: str, statuses: list[int]) -> float:
    t0 = time.perf_counter()
    body = {"model": model, "prompt": [5, 6, 7, 8], "max_tokens": 8}
    async with s.post(url + "/v1/completions", json=body) as r:
        await r.read()
        statuses.append(r.status)
    return time.perf_counter() - t0


def waits(fe: Any) -> dict[str, float]:
    got = samples(fe)
    out: dict[str, float] = {}
    for (name, labels), v in got.items():
        lab = dict(labels)
        if name.startswith("shoal_cold_start_wait_seconds_") and lab.get("outcome") == "served":
            out[name.rsplit("_", 1)[1]] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=3.0)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    rows: list[dict[str, Any]] = []
    statuses: list[int] = []
    with tempfile.TemporaryDirectory(prefix="shoal-s0-") as tmp:
        work = Path(tmp)
        model = make_tiny(work / "tiny")
        nats = NatsServer(work / "nats").start()
        common = ["--nats-url", nats.url, "--namespace", "zero", "--log-level", "info"]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        procs = []
        try:
            fe = spawn("frontend", "frontend", [*common, "--http-port", str(port), "--cold-start-wait", str(WAIT_S)],
                       work)
            procs.append(fe)
            planner = spawn("planner", "planner", [
                *common, "--connector", "local", "--worker-log-dir", str(work / "workers"),
                "--worker-args", f"--engine mock --model-path {model}", "--min-workers", "0",
                "--scale-to-zero-idle", str(a.idle), "--interval", "0.5"], work)
            procs.append(planner)
            fe.wait_ready(60)
            planner.wait_ready(60)
            wait_port("127.0.0.1", port)
            t0 = time.monotonic()
            until("the model parked", lambda: model.name in health(url)["models"], 120)
            learnt = time.monotonic() - t0
            until("no worker", lambda: health(url)["instances"] == 0, 60)
            rows.append({"phase": "planner learns the card, parks the model, drains", "seconds": round(
                time.monotonic() - t0, 2), "listed_after_s": round(learnt, 2)})

            async def scenario() -> None:
                async with aiohttp.ClientSession() as s:
                    for n in (1, 2):
                        before = waits(fe)
                        first = await complete(s, url, model.name, statuses)
                        after = waits(fe)
                        waited = after.get("sum", 0.0) - before.get("sum", 0.0)
                        t_burst = time.perf_counter()
                        await asyncio.gather(*(complete(s, url, model.name, statuses) for _ in range(a.burst)))
                        burst_s = time.perf_counter() - t_burst
                        t1 = time.monotonic()
                        drained = await asyncio.to_thread(until, "drain to zero",
                                                          lambda: health(url)["instances"] == 0, 60 + a.idle)
                        rows.append({"phase": f"cold start {n} from no workers", "first_request_s": round(first, 3),
                                     "reported_wait_s": round(waited, 3),
                                     "burst": f"{a.burst} in {burst_s:.2f}s",
                                     "drained_to_zero_after_s": round(time.monotonic() - t1, 2),
                                     "listed_while_parked": model.name in health(url)["models"],
                                     "drain_wait_s": round(drained, 2)})
                        print(rows[-1], flush=True)

            asyncio.run(scenario())
        finally:
            for p in reversed(procs):
                p.stop()
            nats.stop()
    failed = [s for s in statuses if s != 200]
    checks = {"the first request from no workers completes (200)": bool(rows[1:]) and statuses[0] == 200,
              "its wait is reported (shoal_cold_start_wait_seconds)": all(r.get("reported_wait_s", 0) > 0
                                                                          for r in rows[1:]),
              "drained back to zero after the idle period": all(r["drained_to_zero_after_s"] >= a.idle
                                                                for r in rows[1:]),
              "no failed request": not failed and len(statuses) == 2 * (1 + a.burst),
              "listed in /v1/models while parked": all(r["listed_while_parked"] for r in rows[1:])}
    print(checks)
    save("6_scale_zero", "6. Scale from zero: parked model, cold start, drain back to zero",
         {"rows": rows, "idle_s": a.idle, "cold_start_wait_s": WAIT_S, "engine": "mock", "connector": "local",
          "requests": len(statuses), "failed": len(failed)}, checks, scratch=a.no_report)
    if not all(checks.values()):
        print("FAIL:", [k for k, ok in checks.items() if not ok], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
