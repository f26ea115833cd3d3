"""Throughput of shared.http: a small JSON response and a 64-chunk SSE stream, at concurrency 64.

    python -m tests.bench.bench_http [--duration 5] [--concurrency 64] [--chunks 64] [--server shoal|uvicorn]

--server uvicorn serves the same bytes from a bare ASGI app on uvicorn (uvloop, httptools), the
library server shoal's own shared.http has to beat to keep its place (docs/ARCHITECTURE.md).

The server runs under uvloop pinned to core 0; the aiohttp load generator runs in another
process pinned to core 1 (taskset -c 1). Prints requests/s and the server's CPU time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.bench.bench_http"
JSON_BODY = b'{"object":"list","data":[{"id":"tiny","object":"model","owned_by":"shoal"}]}'
SSE_CHUNK = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,'
             b'"delta":{"content":" token"}}]}\n\n')


def serve(chunks: int) -> None:
    import uvloop

    from shared.http import HttpServer, Request, Response, StreamingResponse

    os.sched_setaffinity(0, {0})

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(chunks - 1):
            yield SSE_CHUNK
        yield b"data: [DONE]\n\n"

    async def handler(req: Request) -> Response | StreamingResponse:
        if req.path == "/sse":
            return StreamingResponse(200, stream())
        return Response(200, JSON_BODY)

    async def main() -> None:
        server = HttpServer(handler, "127.0.0.1", 0)
        print(await server.start(), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
        await server.stop(grace=1.0)

    uvloop.run(main())


def serve_uvicorn(chunks: int) -> None:
    import socket

    import uvicorn

    os.sched_setaffinity(0, {0})
    json_head = {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-type", b"application/json")]}
    sse_head = {"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]}

    async def app(scope: dict, receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/sse":
            await send(sse_head)  # type: ignore[operator]
            for _ in range(chunks - 1):
                await send({"type": "http.response.body", "body": SSE_CHUNK, "more_body": True})  # type: ignore[operator]
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})  # type: ignore[operator]
            return
        await send(json_head)  # type: ignore[operator]
        await send({"type": "http.response.body", "body": JSON_BODY})  # type: ignore[operator]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="off", access_log=False,
                            log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def load(url: str, concurrency: int, duration: float) -> None:
    import aiohttp
    import uvloop

    async def worker(session: aiohttp.ClientSession, end: float, counts: list[int]) -> None:
        while time.monotonic() < end:
            async with session.get(url) as r:
                await r.read()
                counts[0 if r.status == 200 else 1] += 1

    async def main() -> None:
        counts = [0, 0]
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session, time.monotonic() + 0.5, [0, 0]) for _ in range(concurrency)))
            t0 = time.monotonic()
            await asyncio.gather(*(worker(session, t0 + duration, counts) for _ in range(concurrency)))
            elapsed = time.monotonic() - t0
        print(f"{counts[0]} {counts[1]} {elapsed:.3f}", flush=True)

    uvloop.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_case(name: str, url: str, server_pid: int, args: argparse.Namespace) -> tuple[str, float, float, float]:
    cmd = ["taskset", "-c", "1", sys.executable, "-m", MODULE, "--load", url,
           "--concurrency", str(args.concurrency), "--duration", str(args.duration)]
    cpu0 = cpu_seconds(server_pid)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
    cpu = cpu_seconds(server_pid) - cpu0
    ok, failed, elapsed = int(out[0]), int(out[1]), float(out[2])
    if failed:
        raise SystemExit(f"{name}: {failed} requests failed")
    return name, ok / elapsed, cpu / (elapsed + 0.5) * 100, cpu * 1e6 / max(ok, 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--chunks", type=int, default=64)
    p.add_argument("--server", choices=("shoal", "uvicorn"), default="shoal")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--load", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return serve_uvicorn(args.chunks) if args.server == "uvicorn" else serve(args.chunks)
    if args.load:
        return load(args.load, args.concurrency, args.duration)
    server = subprocess.Popen([sys.executable, "-m", MODULE, "--serve", "--server", args.server,
                               "--chunks", str(args.chunks)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{int(server.stdout.readline())}"
        rows = [run_case("json", base + "/json", server.pid, args),
                run_case(f"sse x{args.chunks}", base + "/sse", server.pid, args)]
    finally:
        if args.server == "uvicorn":
            server.terminate()  # uvicorn stops on SIGTERM
        server.communicate(input="", timeout=10)
    print(f"{args.server}: concurrency {args.concurrency}, {args.duration:.0f}s per case, server on core 0 (uvloop), "
          f"aiohttp client on core 1")
    print(f"{'case':<10} {'req/s':>10} {'server cpu %':>13} {'server us/req':>14}")
    for name, rps, cpu_pct, us in rows:
        print(f"{name:<10} {rps:>10.0f} {cpu_pct:>13.0f} {us:>14.0f}")


if __name__ == "__main__":
    main()
