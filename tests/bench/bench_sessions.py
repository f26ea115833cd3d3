"""Session affinity across two frontends (real nats-server, mock workers, real HTTP).

python -m tests.bench.bench_sessions [--sessions 200] [--turns 10] [--workers 4] [--no-report]

Two frontends behind an imaginary load balancer; each session's turns alternate between them (turn 1
on frontend 1, turn 2 on frontend 2, ...), sessions run concurrently. Measured for each store
(`--router-session-affinity-store local`, today's per-process map, and `shared`, JetStream KV): the
share of turns served by the session's first worker. Then one worker is killed (SIGKILL) and every
session it held takes 4 more turns: with the shared store each must move once (all its later turns on
one new worker; the bucket's record says moves == 1). Exits 1 unless the shared store keeps >= 99% of
turns on their session's worker and every session of the killed worker moved exactly once.
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

from protocol import codec, subjects
from protocol.sessions import SessionRecord
from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import spawn
from shared.config.args import NatsOptions
from shared.model.tiny import make_tiny
from shared.runtime import Runtime
from tests.bench.routing_results import save

NS = "sessbench"
BAR = 0.99
AFTER_KILL_TURNS = 4


async def turn(s: aiohttp.ClientSession, url: str, session: str, history: list[dict[str, str]]) -> str:
    body = {"model": "tiny", "messages": history, "max_tokens": 4}
    for attempt in range(5):
        async with s.post(url + "/v1/chat/completions", json=body, headers={"x-session-id": session}) as r:
            data = await r.json()
            if r.status == 200:
                history.append({"role": "assistant", "content": data["choices"][0]["message"]["content"] or "ok"})
                return r.headers.get("x-shoal-worker", "")
        await asyncio.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"turn failed: {r.status} {data}")


async def conversation(s: aiohttp.ClientSession, urls: list[str], session: str, turns: int, start: int,
                       history: list[dict[str, str]]) -> list[str]:
    served = []
    for t in range(start, start + turns):
        history.append({"role": "user", "content": f"{session} turn {t}"})
        served.append(await turn(s, urls[t % 2], session, history))
    return served


async def run_store(store: str, a: argparse.Namespace, work: Path, nats: NatsServer) -> dict[str, Any]:
    ns = f"{NS}-{store}"
    common = ["--nats-url", nats.url, "--namespace", ns, "--log-level", "warning"]
    model = make_tiny(work / "tiny") if not (work / "tiny").exists() else work / "tiny"
    workers = [spawn(f"{store}-w{i}", "decode", [*common, "--model-path", str(model), "--engine", "mock",
                                                 "--speedup-ratio", "50"], work) for i in range(a.workers)]
    ports = [free_port(), free_port()]
    fes = [spawn(f"{store}-fe{i}", "frontend", [*common, "--http-port", str(p), "--router-mode", "round-robin",
                                                "--router-session-affinity-ttl-secs", "600",
                                                "--router-session-affinity-store", store,
                                                "--migration-limit", "1"], work)
           for i, p in enumerate(ports)]
    try:
        for p in [*workers, *fes]:
            p.wait_ready(120)
        for port in ports:
            wait_port("127.0.0.1", port)
        await asyncio.sleep(1.5)
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        sem = asyncio.Semaphore(a.concurrency)
        histories: dict[str, list[dict[str, str]]] = {f"s{i}": [] for i in range(a.sessions)}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            async def one(session: str, turns: int, start: int) -> list[str]:
                async with sem:
                    return await conversation(s, urls, session, turns, start, histories[session])
            t0 = time.monotonic()
            served = dict(zip(histories, await asyncio.gather(*(one(k, a.turns, 0) for k in histories)),
                              strict=True))
            secs = time.monotonic() - t0
            owner = {k: v[0] for k, v in served.items()}
            kept = sum(w == owner[k] for k, v in served.items() for w in v)
            total = sum(len(v) for v in served.values())
            # kill the worker holding the most sessions
            by_worker: dict[str, list[str]] = {}
            for k, w in owner.items():
                by_worker.setdefault(w, []).append(k)
            victim_id = max(by_worker, key=lambda w: len(by_worker[w]))
            victim = next(p for p in workers if _worker_id(p) == victim_id)
            victim.kill()
            orphans = by_worker[victim_id]
            after = dict(zip(orphans, await asyncio.gather(*(one(k, AFTER_KILL_TURNS, a.turns) for k in orphans)),
                             strict=True))
        one_new_worker = sum(len(set(v)) == 1 and victim_id not in v for v in after.values())
        moves = await _moves(nats.url, ns, orphans) if store == "shared" else {}
        return {"store": store, "sessions": a.sessions, "turns": total,
                "on_session_worker": round(kept / total, 4), "seconds": round(secs, 2),
                "killed_worker_sessions": len(orphans),
                "moved_to_one_worker": one_new_worker,
                "records_with_moves_1": sum(m == 1 for m in moves.values()) if moves else None}
    finally:
        for p in [*fes, *workers]:
            p.stop(10)


def _worker_id(proc: Any) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.system_port}/health", timeout=5) as r:
        return json.loads(r.read())["worker_id"]


async def _moves(url: str, ns: str, sessions: list[str]) -> dict[str, int]:
    rt = await Runtime.connect(NatsOptions(url=url), ns, "bench")
    try:
        kv = await rt.discovery.bucket(subjects.SESSIONS_BUCKET)
        out = {}
        for s in sessions:
            entry = await kv.get(subjects.session_key(ns, "backend", s))
            out[s] = codec.decode(entry.value, SessionRecord).moves
        return out
    finally:
        await rt.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="shoal-sess-") as tmp:
        work = Path(tmp)
        nats = NatsServer(work / "nats").start()
        try:
            for store in ("local", "shared"):
                rows.append(asyncio.run(run_store(store, a, work, nats)))
                print(rows[-1], flush=True)
        finally:
            nats.stop()
    shared = rows[-1]
    checks = {f"shared: >= {BAR:.0%} of turns on the session's worker": shared["on_session_worker"] >= BAR,
              "shared: each session of the killed worker moved once":
                  shared["moved_to_one_worker"] == shared["killed_worker_sessions"]
                  == shared["records_with_moves_1"]}
    print(checks)
    save("2_sessions", "2. Session affinity shared by two frontends", {"rows": rows}, checks, scratch=a.no_report)
    if not all(checks.values()):
        print("FAIL:", [k for k, ok in checks.items() if not ok], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
