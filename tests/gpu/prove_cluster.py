"""GPU proof, part 2: shoal's services on SGLang, a prefill/decode pair, and shoal vs SGLang's own server.

    prove_cluster.py MODEL_DIR OUTDIR REF.json [--engine sglang|mock] [--skip-disagg] [--skip-bench]

Starts nats-server, a decode worker (--engine sglang, SGLang's flags passed through), a prefill worker
(`services.prefill`) and a disaggregated decode worker (`services.decode --disaggregation-mode decode`,
component "pd", model "tiny-pd"; SGLang's NIXL backend), SGLang's HTTP server and shoal's frontend,
all on one GPU (each SGLang holds at most --max-total-tokens of KV), then:
  (b) greedy tokens over NATS and greedy text over HTTP equal (a)'s; KV events arrive on NATS
  (c) the prefill/decode pair, paired by the decode worker itself (bootstrap host/port from the prefill
      worker's instance record, a room per request): (a)'s tokens over NATS, (a)'s text over HTTP
  (d) loadgen (256 requests, ~512 prompt tokens, 128 output tokens, 32 streams) against shoal's frontend
      and against `python -m sglang.launch_server`, same model, same flags
Every result is one JSON line. `--engine mock` rehearses the orchestration on a CPU machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from prove import HTTP_QUESTIONS, SGLANG_FLAGS, chat_prompts, emit, exit_status

from protocol import codec, subjects
from protocol.kv_events import KvEventBatch
from protocol.messages import EngineRequest, OutputChunk, SamplingOptions, StopConditions
from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import ServiceProc, spawn
from shared.config.args import NatsOptions
from shared.runtime.client import EndpointClient
from shared.runtime.runtime import Runtime

NS = "prove"
MODEL_NAME = "tiny"
BOOTSTRAP_PORT = 8998
BENCH = {"requests": 256, "concurrency": 32, "prompt_words": 133, "max_tokens": 128}  # ~512 prompt tokens
READY_TIMEOUT = 420.0


class Cluster:
    def __init__(self, model: str, engine: str, logs: Path, disagg: bool, peer: bool) -> None:
        self.model, self.engine, self.logs = model, engine, logs
        self.disagg, self.peer = disagg and engine == "sglang", peer and engine == "sglang"
        self.nats = NatsServer(logs / "nats-data", log_file=logs / "nats.log")
        self.procs: dict[str, ServiceProc] = {}
        self.sglang_server: subprocess.Popen[bytes] | None = None
        self.http_port, self.sglang_port = free_port(), free_port()

    def start(self) -> None:
        self.nats.start()
        common = ["--nats-url", self.nats.url, "--namespace", NS]
        engine = ["--engine", self.engine, "--model-path", self.model]
        flags = SGLANG_FLAGS if self.engine == "sglang" else []
        self._spawn("worker", "decode", [*common, *engine, "--served-model-name", MODEL_NAME, *flags])
        if self.disagg:
            pd = ["--served-model-name", "tiny-pd", "--disaggregation-transfer-backend", "nixl"]
            self._spawn("prefill", "prefill", [*common, *engine, *pd,
                                               "--disaggregation-bootstrap-port", str(BOOTSTRAP_PORT), *flags])
            self._spawn("decode", "decode", [*common, *engine, *pd, "--component", "pd",
                                             "--disaggregation-mode", "decode", *flags])
        if self.peer:
            log = open(self.logs / "sglang_server.log", "wb")  # closed when the server exits
            self.sglang_server = subprocess.Popen(
                [sys.executable, "-m", "sglang.launch_server", "--model-path", self.model, "--host", "127.0.0.1",
                 "--port", str(self.sglang_port), "--served-model-name", MODEL_NAME,
                 "--chat-template", str(Path(self.model) / "chat_template.jinja"), *SGLANG_FLAGS],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._spawn("frontend", "frontend", [*common, "--http-port", str(self.http_port)])

    def _spawn(self, name: str, module: str, args: list[str]) -> None:
        self.procs[name] = spawn(name, module, args, self.logs)

    def wait_ready(self) -> dict[str, float]:
        t0, took = time.monotonic(), {}
        for name, proc in self.procs.items():
            proc.wait_ready(READY_TIMEOUT - (time.monotonic() - t0))
            took[name] = round(time.monotonic() - t0, 1)
        wait_port("127.0.0.1", self.http_port, 30)
        if self.sglang_server is not None:
            _wait_http(f"http://127.0.0.1:{self.sglang_port}/health", READY_TIMEOUT - (time.monotonic() - t0),
                       self.sglang_server)
            took["sglang_server"] = round(time.monotonic() - t0, 1)
        return took

    def stop_disagg(self) -> None:
        for name in ("prefill", "decode"):
            if name in self.procs:
                proc = self.procs.pop(name)
                print(f"----- {name} log tail -----\n{proc.tail(60)}", flush=True)
                proc.stop(30)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            with contextlib.suppress(Exception):
                proc.stop(30)
        if self.sglang_server is not None and self.sglang_server.poll() is None:
            os.killpg(self.sglang_server.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sglang_server.wait(30)
        self.nats.stop()

    def tails(self) -> None:
        for name, proc in self.procs.items():
            print(f"----- {name} log tail -----\n{proc.tail(40)}", flush=True)
        with contextlib.suppress(OSError):
            lines = (self.logs / "sglang_server.log").read_text(errors="replace").splitlines()[-40:]
            print("----- sglang_server log tail -----\n" + "\n".join(lines), flush=True)


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def _greedy(rid: str, prompt: list[int]) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=prompt, model=MODEL_NAME, sampling=SamplingOptions(temperature=0.0),
                         stop=StopConditions(max_tokens=32))


async def _tokens(client: EndpointClient[OutputChunk], req: EngineRequest) -> list[int]:
    out: list[int] = []
    async with contextlib.aclosing(client.generate(req, req.request_id)) as batches:
        async for items in batches:
            for chunk in items:
                out += chunk.token_ids
    return out


async def check_nats(rt: Runtime, ref: dict[str, Any]) -> None:
    """(b) the worker over NATS: token-for-token (a); KV events on the bus."""
    batches: list[KvEventBatch] = []

    async def on_kv(msg: Any) -> None:
        batches.append(codec.decode(msg.data, KvEventBatch))

    sub = await rt.nc.subscribe(subjects.kv_events_all(NS), cb=on_kv)
    client: EndpointClient[OutputChunk] = EndpointClient(rt, "backend", "generate", OutputChunk)
    await client.start()
    await client.wait_for_instances(1, 30)
    try:
        outs = [await _tokens(client, _greedy(f"b{i}", p)) for i, p in enumerate(ref["prompts"])]  # one at a time
        if not any(ref["outputs"]):  # CPU rehearsal without (a): compare with what the worker itself gives
            ref["outputs"] = outs
            ref["http_outputs"] = [await _tokens(client, _greedy(f"h{i}", p))
                                   for i, p in enumerate(ref["http_prompts"])]
        same = [o == r for o, r in zip(outs, ref["outputs"], strict=True)]
        emit("b_nats_greedy_equals_a", all_equal=all(same), per_prompt=same)
        await asyncio.sleep(1.0)
        stored = sum(len(e.block_hashes) for b in batches for e in b.events if type(e).__name__ == "BlockStored")
        emit("b_kv_events_on_nats", ok=stored > 0, batches=len(batches), stored_blocks=stored,
             workers=sorted({b.worker_id for b in batches}))
    finally:
        await sub.unsubscribe()
        await client.stop()


async def check_http(port: int, model: str, ref: dict[str, Any], model_name: str = MODEL_NAME,
                     step: str = "b_http_stream_equals_a") -> None:
    """(b) the frontend over HTTP, streamed: the text of (a)'s tokens."""
    import aiohttp

    from shared.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(model)
    async with aiohttp.ClientSession() as s:
        texts = [await _chat(s, port, q, model_name) for q in HTTP_QUESTIONS]
    want = [tok.decode(o) for o in ref["http_outputs"]]
    same = [t == w for t, w in zip(texts, want, strict=True)]
    emit(step, all_equal=all(same), per_prompt=same, sample=texts[0][:40])


async def _chat(s: Any, port: int, question: str, model_name: str = MODEL_NAME) -> str:
    body = {"model": model_name, "messages": [{"role": "user", "content": question}], "max_tokens": 32,
            "temperature": 0, "stream": True}
    text = ""
    async with s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
        async for raw in r.content:
            line = raw.strip()
            if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                for choice in json.loads(line[5:]).get("choices", []):
                    text += (choice.get("delta") or {}).get("content") or ""
    return text


async def check_disagg(rt: Runtime, port: int, model: str, ref: dict[str, Any]) -> None:
    """(c) the decode worker pairs every request with the prefill worker itself: (a)'s tokens and text."""
    dec: EndpointClient[OutputChunk] = EndpointClient(rt, "pd", "generate", OutputChunk)
    await dec.start()
    await dec.wait_for_instances(1, 30)
    try:
        t0 = time.monotonic()
        outs = [await _tokens(dec, _greedy(f"c{i}", p)) for i, p in enumerate(ref["prompts"])]  # one at a time
        same = [o == r for o, r in zip(outs, ref["outputs"], strict=True)]
        emit("c_disagg_greedy_equals_a", all_equal=all(same), per_prompt=same, seconds=round(time.monotonic() - t0, 2),
             decode_first=outs[0][:8], want_first=ref["outputs"][0][:8])
    finally:
        await dec.stop()
    await check_http(port, model, ref, model_name="tiny-pd", step="c_http_stream_equals_a")


def bench(label: str, url: str, model: str = MODEL_NAME) -> dict[str, Any]:
    """(d) loadgen.py against an OpenAI endpoint: a short warm-up, then the measured run."""
    def run(requests: int, tag: str) -> dict[str, Any]:
        cmd = [sys.executable, str(Path(__file__).parent / "loadgen.py"), "--url", url, "--model", model,
               "--requests", str(requests), "--concurrency", str(BENCH["concurrency"]),
               "--prompt-words", str(BENCH["prompt_words"]), "--max-tokens", str(BENCH["max_tokens"]),
               "--label", tag]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
        lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
        return json.loads(lines[-1]) if lines else {"label": tag, "error": out.stderr[-400:]}

    run(BENCH["concurrency"], f"{label}-warmup")
    result = run(BENCH["requests"], label)
    emit("d_bench", **result)
    return result


async def amain(a: argparse.Namespace, ref: dict[str, Any] | None) -> int:
    logs = Path(tempfile.mkdtemp(prefix="prove-cluster-"))
    cluster = Cluster(a.model, a.engine, logs, disagg=not a.skip_disagg, peer=not a.skip_bench)
    rc = 1
    try:
        cluster.start()
        emit("cluster_ready", seconds_to_ready=await asyncio.to_thread(cluster.wait_ready))
        ref = ref or await asyncio.to_thread(_wait_ref, a.ref)
        rt = await Runtime.connect(NatsOptions(url=cluster.nats.url), NS, "prove")
        try:
            await _step("b_nats", check_nats(rt, ref))
            await _step("b_http", check_http(cluster.http_port, a.model, ref))
            if cluster.disagg:
                await _step("c_disagg", check_disagg(rt, cluster.http_port, a.model, ref))
        finally:
            await rt.close()
        if cluster.disagg and os.environ.get("PROVE_PD_BENCH") == "1":  # the same load through the PD pair
            await asyncio.to_thread(bench, "shoal-pd", f"http://127.0.0.1:{cluster.http_port}", "tiny-pd")
        cluster.stop_disagg()
        for _ in range(0 if a.skip_bench else int(os.environ.get("PROVE_BENCH_REPEAT", "1"))):
            shoal = await asyncio.to_thread(bench, "shoal", f"http://127.0.0.1:{cluster.http_port}")
            if cluster.sglang_server is not None:
                peer = await asyncio.to_thread(bench, "sglang", f"http://127.0.0.1:{cluster.sglang_port}")
                emit("d_compare", shoal_tok_s=shoal.get("tok_s"), sglang_tok_s=peer.get("tok_s"),
                     shoal_ttft_p50_ms=shoal.get("ttft_p50_ms"), sglang_ttft_p50_ms=peer.get("ttft_p50_ms"),
                     tok_s_ratio=_ratio(shoal.get("tok_s"), peer.get("tok_s")))
        rc = 0
    except Exception as e:
        emit("cluster_failed", error=repr(e)[:600])
        cluster.tails()
    finally:
        cluster.stop()
    return rc


async def _step(name: str, check: Any, timeout: float = 120.0) -> None:
    """One check; a failure is reported and the proof goes on to the next."""
    try:
        async with asyncio.timeout(timeout):
            await check
    except Exception as e:
        emit(f"{name}_failed", error=repr(e)[:600])


def _wait_ref(path: str, timeout: float = 400.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(Path(path).read_text())
        time.sleep(0.5)
    raise TimeoutError(f"no {path} from (a) after {timeout}s")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _mock_ref(model: str) -> dict[str, Any]:
    """Without (a) (CPU rehearsal): the prompts, and no expected tokens to match."""
    prompts, http_prompts = chat_prompts(model), chat_prompts(model, HTTP_QUESTIONS)
    return {"prompts": prompts, "outputs": [[] for _ in prompts], "http_prompts": http_prompts,
            "http_outputs": [[] for _ in http_prompts]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("outdir")
    p.add_argument("ref", nargs="?", default="")
    p.add_argument("--engine", default="sglang", choices=("sglang", "mock", "reference"))
    p.add_argument("--skip-disagg", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    a = p.parse_args()
    ref = None if a.ref else _mock_ref(a.model)  # (a) may still be running beside us: read it when needed
    raise SystemExit(exit_status(asyncio.run(amain(a, ref))))


if __name__ == "__main__":
    main()
