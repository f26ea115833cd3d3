"""GPU proof of embeddings on SGLang: shoal's embedding worker (`--engine sglang`, SGLang's `--is-embedding`)
behind shoal's frontend, against transformers, and against SGLang's own server under the same load.

    prove_embed.py MODEL OUTDIR [--engine sglang|reference] [--skip-bench]

Every result is one JSON line on stdout:
  e_oracle        transformers: the last token's final hidden state, L2-normalised, per text (float32)
  e_http          /v1/embeddings through the cluster: cosine similarity with the oracle per text, of base64
                  against float, and of one text alone against the same text in a batch
  e_bench         the same embedding load against shoal's frontend and SGLang's own server, inputs/s
The reference engine rehearses the script on a CPU (no SGLang server there).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from prove import SGLANG_FLAGS, emit, exit_status

from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import ServiceProc, spawn

MIN_COSINE = 0.999  # bf16 SGLang against float32 transformers
TEXTS = ["What is a KV cache?", "Name three rivers.", "hello", "Why is the sky blue? Explain it to a child.",
         "NATS carries every message between shoal's services.", "a"]
BENCH = {"requests": 512, "concurrency": 32, "inputs_per_request": 4}
READY_TIMEOUT = 420.0


def oracle(model: str) -> list[list[float]]:
    """transformers, float32, on the GPU when there is one: what every engine's vector should be close to."""
    import torch
    from transformers import LlamaForCausalLM

    from shared.tokenizer import Tokenizer

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = Tokenizer.from_dir(model)
    hf = LlamaForCausalLM.from_pretrained(model, dtype=torch.float32).to(dev).eval()
    out = []
    with torch.no_grad():
        for t in TEXTS:
            ids = torch.tensor([tok.encode(t, add_special_tokens=True)], device=dev)
            h = hf.model(input_ids=ids).last_hidden_state[0, -1]
            out.append(torch.nn.functional.normalize(h, dim=-1).cpu().tolist())
    del hf
    if dev == "cuda":
        torch.cuda.empty_cache()
    return out


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = sum(x * x for x in a) ** 0.5, sum(y * y for y in b) ** 0.5
    return dot / (na * nb)


async def post(s: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with s.post(url + "/v1/embeddings", json=body) as r:
        data = await r.json()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {data}")
        return data


async def check_http(url: str, model: str, want: list[list[float]]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        got = await post(s, url, {"model": model, "input": TEXTS, "encoding_format": "float"})
        vecs = [d["embedding"] for d in got["data"]]
        b64 = await post(s, url, {"model": model, "input": TEXTS, "encoding_format": "base64"})
        unpacked = [list(struct.unpack(f"<{len(v)}f", base64.b64decode(d["embedding"])))
                    for d, v in zip(b64["data"], vecs, strict=True)]
        alone = (await post(s, url, {"model": model, "input": TEXTS[3], "encoding_format": "float"}))["data"][0]
    cos = [round(cosine(v, w), 5) for v, w in zip(vecs, want, strict=True)]
    emit("e_http", ok=min(cos) >= MIN_COSINE, dim=len(vecs[0]), cosine_vs_transformers=cos, min_cosine=min(cos),
         # two requests, two forward passes: bf16 SGLang need not repeat itself bit for bit across batches
         base64_vs_float_min_cosine=round(min(cosine(u, v) for u, v in zip(unpacked, vecs, strict=True)), 6),
         alone_vs_batched_cosine=round(cosine(alone["embedding"], vecs[3]), 6), usage=got["usage"])


async def bench(label: str, url: str, model: str) -> dict[str, Any]:
    import aiohttp

    n, conc, k = BENCH["requests"], BENCH["concurrency"], BENCH["inputs_per_request"]
    gate = asyncio.Semaphore(conc)
    lat: list[float] = []
    failed = 0

    async def one(s: Any, i: int) -> None:
        nonlocal failed
        body = {"model": model, "input": [f"request {i} input {j}: " + "lorem ipsum " * 20 for j in range(k)],
                "encoding_format": "float"}
        async with gate:
            t0 = time.perf_counter()
            try:
                await post(s, url, body)
                lat.append(time.perf_counter() - t0)
            except Exception:
                failed += 1

    async with aiohttp.ClientSession() as s:
        await one(s, -1)  # warm-up
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(s, i) for i in range(n)))
        wall = time.perf_counter() - t0
    lat.sort()
    result = {"label": label, "requests": n, "failed": failed, "inputs_per_s": round(n * k / wall, 1),
              "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
              "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1) if lat else None, **BENCH}
    emit("e_bench", **result)
    return result


def start(a: argparse.Namespace, nats: NatsServer, procs: list[ServiceProc], servers: list[subprocess.Popen[bytes]],
          logs: Path, port: int, sglang_port: int) -> None:
    """nats-server, the embedding worker and the frontend (ready), and SGLang's own server (starting)."""
    nats.start()
    common = ["--nats-url", nats.url, "--namespace", "prove"]
    flags = [*SGLANG_FLAGS, "--mem-fraction-static", "0.4"] if a.engine == "sglang" else []
    procs.append(spawn("embedding", "embedding", [*common, "--engine", a.engine, "--model-path", a.model,
                                                  "--served-model-name", "tiny-embed", *flags], logs))
    procs.append(spawn("frontend", "frontend", [*common, "--http-port", str(port)], logs))
    if a.engine == "sglang" and not a.skip_bench:
        log = open(logs / "sglang_server.log", "wb")  # closed when the server exits
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "sglang.launch_server", "--model-path", a.model, "--host", "127.0.0.1",
             "--port", str(sglang_port), "--served-model-name", "tiny-embed", "--is-embedding", *flags],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    for p in procs:
        p.wait_ready(READY_TIMEOUT)
    wait_port("127.0.0.1", port, 30)


async def amain(a: argparse.Namespace) -> int:
    want = await asyncio.to_thread(oracle, a.model)
    emit("e_oracle", texts=len(TEXTS), dim=len(want[0]))
    logs = Path(tempfile.mkdtemp(prefix="prove-embed-"))
    nats = NatsServer(logs / "nats-data", log_file=logs / "nats.log")
    procs: list[ServiceProc] = []
    servers: list[subprocess.Popen[bytes]] = []
    port, sglang_port = free_port(), free_port()
    rc = 1
    try:
        t0 = time.monotonic()
        await asyncio.to_thread(start, a, nats, procs, servers, logs, port, sglang_port)
        await _wait_listed(f"http://127.0.0.1:{port}", "tiny-embed")
        emit("e_cluster_ready", seconds=round(time.monotonic() - t0, 1))
        await check_http(f"http://127.0.0.1:{port}", "tiny-embed", want)
        if not a.skip_bench:
            shoal = await bench("shoal", f"http://127.0.0.1:{port}", "tiny-embed")
            if servers:
                await _wait_listed(f"http://127.0.0.1:{sglang_port}", "tiny-embed")
                peer = await bench("sglang", f"http://127.0.0.1:{sglang_port}", "tiny-embed")
                emit("e_compare", shoal_inputs_per_s=shoal["inputs_per_s"], sglang_inputs_per_s=peer["inputs_per_s"],
                     ratio=round(shoal["inputs_per_s"] / peer["inputs_per_s"], 3) if peer["inputs_per_s"] else None)
        rc = 0
    except Exception as e:
        emit("e_failed", error=repr(e)[:600])
        for p in procs:
            print(f"----- {p.name} log tail -----\n{p.tail(60)}", flush=True)
        with contextlib.suppress(OSError):
            print((logs / "sglang_server.log").read_text(errors="replace")[-4000:], flush=True)
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop(30)
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, 15)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(30)
        nats.stop()
    return rc


async def _wait_listed(url: str, model: str, timeout: float = READY_TIMEOUT) -> None:
    import aiohttp

    end = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < end:
            with contextlib.suppress(aiohttp.ClientError):
                async with s.get(url + "/v1/models") as r:
                    if r.status == 200 and any(m["id"] == model for m in (await r.json())["data"]):
                        return
            await asyncio.sleep(0.5)
    raise TimeoutError(f"{url} never listed {model}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("outdir")
    p.add_argument("--engine", default="sglang", choices=("sglang", "reference"))
    p.add_argument("--skip-bench", action="store_true")
    raise SystemExit(exit_status(asyncio.run(amain(p.parse_args()))))


if __name__ == "__main__":
    main()
