"""KV transfer bandwidth between two worker processes over NIXL (UCX), against a plain memory copy.

python -m tests.bench.bench_transfer [--layers 8] [--blocks 1 16 256] [--repeats 20] [--ttft] [--report]

Two processes each register a paged KV cache (`[num_blocks, 2, page_size, kv_heads, head_dim]`
per layer, like the reference engine) with their own `KvAgent`; the receiver publishes its
`AgentRecord` over a pipe (the services use the `shoal-nixl` bucket). The sender writes N
blocks of every layer, each write with its completion notification, and times post -> DONE
(median of the repeats). Block ids are either scattered (every block its own region: the
worst case) or consecutive (merged into one region per layer). The baseline is a
single-threaded `memcpy` (torch `copy_`) of the same number of bytes inside one process:
the physical limit of this machine.

`--ttft` also measures end-to-end TTFT at concurrency 1 through the frontend (tiny model,
reference engine): aggregated (one worker) vs disaggregated (prefill + decode worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import torch

from protocol import codec
from shared.cluster.procs import spawn
from shared.transfer import AgentRecord, KvAgent
from tests.bench.loadgen import percentile
from tests.bench.local_cluster import bench_cluster
from tests.bench.report import append_report

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def kv_tensors(a: argparse.Namespace) -> list[torch.Tensor]:
    shape = (a.num_blocks, 2, a.page_size, a.kv_heads, a.head_dim)
    return [torch.ones(shape, dtype=DTYPES[a.dtype]) for _ in range(a.layers)]


def receiver(a: argparse.Namespace, conn: Connection) -> None:
    async def main() -> None:
        tensors = kv_tensors(a)
        agent = KvAgent(f"bench-receiver-{os.getpid()}")
        record = await agent.start(tensors, tensors[0][0].nbytes)
        conn.send_bytes(codec.encode(record))
        while not conn.poll():  # as a decode worker expecting a write: poll NIXL every millisecond
            await agent.notifications()
            await asyncio.sleep(0.001)
        await agent.stop()

    asyncio.run(main())


async def time_writes(agent: KvAgent, peer: AgentRecord, n: int, scattered: bool, repeats: int) -> float:
    rng = random.Random(n)
    times = []
    for i in range(repeats + 1):
        if scattered:
            src, dst = rng.sample(range(peer.num_blocks), n), rng.sample(range(peer.num_blocks), n)
        else:
            start = rng.randrange(peer.num_blocks - n + 1)
            src = dst = list(range(start, start + n))
        t0 = time.perf_counter()
        await agent.write(peer, src, dst, f"done:{i}".encode(), timeout=30.0)
        if i:  # the first one warms up the connection
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def memcpy_seconds(nbytes: int, repeats: int) -> float:
    torch.set_num_threads(1)
    src, dst = torch.ones(nbytes, dtype=torch.uint8), torch.empty(nbytes, dtype=torch.uint8)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def sender(a: argparse.Namespace, record: AgentRecord) -> list[dict]:
    tensors = kv_tensors(a)
    bpb = tensors[0][0].nbytes
    agent = KvAgent(f"bench-sender-{os.getpid()}")
    await agent.start(tensors, bpb)
    peer = await agent.add_peer(record)
    rows = []
    for n in a.blocks:
        nbytes = n * bpb * a.layers
        base = memcpy_seconds(nbytes, a.repeats)
        for scattered in (True, False):
            t = await time_writes(agent, peer, n, scattered, a.repeats)
            rows.append({"blocks": n, "layout": "scattered" if scattered else "consecutive", "bytes": nbytes,
                         "nixl_ms": round(t * 1e3, 3), "nixl_gbps": round(nbytes / t / 1e9, 2),
                         "memcpy_gbps": round(nbytes / base / 1e9, 2), "ratio": round(base / t, 2)})
    await agent.stop()
    return rows


async def ttft_ms(url: str, model: str, prompt_tokens: int, n: int) -> list[float]:
    rng = random.Random(0)
    out = []
    async with aiohttp.ClientSession() as s:
        for i in range(n + 1):
            body = {"model": model, "prompt": [rng.randrange(3, 256) for _ in range(prompt_tokens)],
                    "max_tokens": 4, "stream": True}
            t0 = time.perf_counter()
            async with s.post(url + "/v1/completions", json=body) as r:
                async for raw in r.content:
                    if raw.startswith(b"data: {") and json.loads(raw[6:])["choices"]:
                        if i:  # the first request warms up
                            out.append((time.perf_counter() - t0) * 1e3)
                        break
    return out


def ttft_rows(prompt_tokens: list[int], n: int) -> list[dict]:
    from shared.model.tiny import make_tiny

    rows = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        work = Path(tmp)
        model = make_tiny(work / "tiny")
        common = ["--engine", "reference", "--num-blocks", "4096"]
        for mode in ("aggregated", "disaggregated"):
            extra = ["--disaggregation-mode", "decode"] if mode == "disaggregated" else []
            with bench_cluster(work, model, [*common, *extra], namespace=mode[:6]) as c:
                pre = None
                if extra:
                    pre = spawn("prefill", "prefill", ["--nats-url", c.nats.url, "--namespace", mode[:6],
                                                       "--log-level", "warning", "--model-path", str(model),
                                                       *common], work).wait_ready(120)
                try:
                    for pt in prompt_tokens:
                        ms = asyncio.run(ttft_ms(c.url, model.name, pt, n))
                        rows.append({"mode": mode, "prompt_tokens": pt, "ttft_p50_ms": round(percentile(ms, 50), 1),
                                     "ttft_p90_ms": round(percentile(ms, 90), 1)})
                        print(rows[-1], flush=True)
                finally:
                    if pre is not None:
                        pre.stop()
    return rows


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.bench_transfer")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    p.add_argument("--num-blocks", type=int, default=1024)
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 16, 256])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--ttft", action="store_true", help="also TTFT aggregated vs disaggregated, end to end")
    p.add_argument("--report", action="store_true", help="append the table to docs/BENCHMARKS.md")
    return p.parse_args(argv)


def print_table(rows: list[dict]) -> None:
    cols = ["blocks", "layout", "bytes", "nixl_ms", "nixl_gbps", "memcpy_gbps", "ratio"]
    print(" ".join(f"{c:>12}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]!s:>12}" for c in cols))


def main(argv: list[str]) -> None:
    a = parse(argv)
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=receiver, args=(a, theirs), daemon=True)
    proc.start()
    try:
        record = codec.decode(ours.recv_bytes(), AgentRecord)
        rows = asyncio.run(sender(a, record))
    finally:
        ours.send(b"stop")
        proc.join(10)
    block_kib = a.page_size * a.kv_heads * a.head_dim * 2 * DTYPES[a.dtype].itemsize / 1024
    print(f"KV block: {block_kib:g} KiB per layer x {a.layers} layers; median of {a.repeats} writes")
    print_table(rows)
    if a.ttft:
        rows += ttft_rows([64, 512, 2048], 20)
    if a.report:
        append_report("KV transfer over NIXL (UCX) between two processes vs memcpy",
                      " ".join(["python -m tests.bench.bench_transfer", *argv]), rows,
                      f"{platform.node()}: {os.cpu_count()} cores, CPU tensors (DRAM)")


if __name__ == "__main__":
    main(sys.argv[1:])
