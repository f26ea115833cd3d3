"""GPU proof: shoal's TTFT when another SGLang process shares the GPU (issue 16).

    prove_share.py MODEL_DIR OUTDIR [--mem-fraction 0.40] [--requests 64] [--concurrency 32]
                   [--prompt-words 250] [--max-tokens 256] [--runs 2] [--engine sglang|mock]

On one GPU, measured in turn (every run a fresh seed; each system idle while the other is measured):
  alone    nats-server + shoal's frontend + one SGLang worker, nothing else on the GPU: the first request
           after ready (one request by itself), then --runs load runs
  resident `python -m sglang.launch_server` started beside it and left idle: shoal's load runs again, then
           SGLang's server measured once (for reference)
  fresh    shoal's worker stopped and a new one started while SGLang's server stays resident, with empty
           Triton/Inductor caches (it compiles everything again, as on a new machine): its first request,
           then --runs load runs
Each SGLang process gets the same flags (CUDA graphs on, --mem-fraction-static --mem-fraction). Every run
is one JSON line, also appended to OUTDIR/share.jsonl with the machine, the commit and the flags; the
SGLang start-up lines that size each KV pool are copied to OUTDIR/pools.txt.

Check (the exit status is 1 when it fails): with SGLang's server resident, shoal's first request and
every load run keep TTFT p50 within 1.1x of shoal alone (the first request: within 1.1x + 50 ms, since a
single request's TTFT is tens of milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from prove import emit, exit_status

from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import ServiceProc, spawn

NS = "share"
MODEL_NAME = "tiny"
READY_TIMEOUT = 400.0
RATIO = 1.1
FIRST_SLACK_MS = 50.0
COMPILE_CACHES = ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")
POOL_MARKERS = ("sglang_warmed_up", "max_total_num_tokens", "KV Cache is allocated", "Memory pool end",
                "Load weight end", "CUDA graph end", "startup timings")


def sglang_flags(mem_fraction: float) -> list[str]:
    return ["--attention-backend", "triton", "--sampling-backend", "pytorch", "--dtype", "bfloat16",
            "--mem-fraction-static", str(mem_fraction), "--page-size", "16"]


class Share:
    def __init__(self, a: argparse.Namespace, logs: Path) -> None:
        self.a, self.logs = a, logs
        self.nats = NatsServer(logs / "nats-data", log_file=logs / "nats.log")
        self.http_port, self.sglang_port = free_port(), free_port()
        self.frontend: ServiceProc | None = None
        self.worker: ServiceProc | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.seed = int(time.time()) % 100_000
        self.records: list[dict[str, Any]] = []

    # ---- processes ---------------------------------------------------------------------------
    def start_base(self) -> None:
        self.nats.start()
        self.frontend = spawn("frontend", "frontend", [*self._common(), "--http-port", str(self.http_port)],
                              self.logs)

    def start_worker(self, tag: str, cold: bool = False) -> float:
        """A worker; `cold`: with empty Triton and Inductor caches, as on a machine that never compiled them."""
        flags = sglang_flags(self.a.mem_fraction) if self.a.engine == "sglang" else []
        env = {name: tempfile.mkdtemp(prefix=f"{tag}-{name.lower()}-") for name in COMPILE_CACHES} if cold else None
        t0 = time.monotonic()
        self.worker = spawn(f"worker-{tag}", "decode", [*self._common(), "--engine", self.a.engine, "--model-path",
                                                        self.a.model, "--served-model-name", MODEL_NAME, *flags],
                            self.logs, env=env)
        self.worker.wait_ready(READY_TIMEOUT)
        assert self.frontend is not None
        self.frontend.wait_ready(60)
        wait_port("127.0.0.1", self.http_port, 30)
        _wait_model(self.http_port, 60)
        return round(time.monotonic() - t0, 1)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop(60)

    def start_server(self) -> float:
        t0 = time.monotonic()
        log = open(self.logs / "sglang_server.log", "wb")  # closed when the server exits
        self.server = subprocess.Popen(
            [sys.executable, "-m", "sglang.launch_server", "--model-path", self.a.model, "--host", "127.0.0.1",
             "--port", str(self.sglang_port), "--served-model-name", MODEL_NAME,
             "--chat-template", str(Path(self.a.model) / "chat_template.jinja"), *sglang_flags(self.a.mem_fraction)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_health(f"http://127.0.0.1:{self.sglang_port}/health", READY_TIMEOUT, self.server)
        return round(time.monotonic() - t0, 1)

    def stop(self) -> None:
        for proc in (self.worker, self.frontend):
            if proc is not None:
                proc.stop(60)
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, 15)
            try:
                self.server.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, 9)
        self.nats.stop()

    def _common(self) -> list[str]:
        return ["--nats-url", self.nats.url, "--namespace", NS]

    # ---- measurements ------------------------------------------------------------------------
    def load(self, phase: str, system: str, port: int) -> dict[str, Any]:
        result = self._loadgen(port, self.a.requests, self.a.concurrency, self.a.max_tokens, f"{phase}-{system}", 300)
        return self._record("load", phase, system, seed=self.seed, **result)

    def first(self, phase: str, port: int) -> dict[str, Any]:
        """One request by itself, right after ready: its TTFT."""
        result = self._loadgen(port, 1, 1, 16, f"{phase}-first", 120)
        return self._record("first", phase, "shoal", seed=self.seed, **result)

    def _loadgen(self, port: int, requests: int, concurrency: int, max_tokens: int, label: str,
                 timeout: float) -> dict[str, Any]:
        """One loadgen.py run with a fresh seed: its JSON result line."""
        self.seed += 1
        cmd = [sys.executable, str(Path(__file__).parent / "loadgen.py"), "--url", f"http://127.0.0.1:{port}",
               "--model", MODEL_NAME, "--requests", str(requests), "--concurrency", str(concurrency),
               "--prompt-words", str(self.a.prompt_words), "--max-tokens", str(max_tokens),
               "--seed", str(self.seed), "--label", label]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": out.stderr[-400:]}

    def _record(self, kind: str, phase: str, system: str, **fields: Any) -> dict[str, Any]:
        rec = {"kind": kind, "phase": phase, "system": system, **fields}
        emit("share_run", **rec)
        self.records.append(rec)
        return rec


def _wait_health(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def _wait_model(port: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                if MODEL_NAME in r.read().decode():
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"model {MODEL_NAME} not listed after {timeout}s")


def verdict(records: list[dict[str, Any]]) -> dict[str, Any]:
    """shoal with SGLang's server resident vs shoal alone."""
    def p50s(phase: str) -> list[float]:
        return [r["ttft_p50_ms"] for r in records if r["kind"] == "load" and r["phase"] == phase
                and r["system"] == "shoal" and r.get("ttft_p50_ms") is not None]

    def first(phase: str) -> float | None:
        got = [r.get("ttft_p50_ms") for r in records if r["kind"] == "first" and r["phase"] == phase]
        return got[0] if got else None

    alone = p50s("alone")
    base = statistics.median(alone) if alone else None
    shared = p50s("resident") + p50s("fresh")
    limit = None if base is None else round(RATIO * base, 1)
    first_alone, first_fresh = first("alone"), first("fresh")
    first_limit = None if first_alone is None else round(RATIO * first_alone + FIRST_SLACK_MS, 1)
    ok = (limit is not None and bool(shared) and all(x <= limit for x in shared)
          and first_limit is not None and first_fresh is not None and first_fresh <= first_limit
          and not any(r.get("errors") for r in records))
    return {"ok": ok, "alone_ttft_p50_ms": alone, "shared_ttft_p50_ms": shared, "limit_ms": limit,
            "first_alone_ms": first_alone, "first_fresh_ms": first_fresh, "first_limit_ms": first_limit}


def _pools(logs: Path) -> str:
    lines = []
    for path in sorted(logs.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if any(m in line for m in POOL_MARKERS):
                lines.append(f"{path.name}: {line.strip()[:300]}")
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    return {"gpu": sh(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]),
            "commit": os.environ.get("SHOAL_COMMIT") or sh(["git", "rev-parse", "HEAD"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("outdir")
    p.add_argument("--engine", default="sglang", choices=("sglang", "mock"))
    p.add_argument("--mem-fraction", type=float, default=0.40)
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--prompt-words", type=int, default=250)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    out = Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="prove-share-"))
    share = Share(a, logs)
    meta = {**_machine(), "flags": sglang_flags(a.mem_fraction), "requests": a.requests,
            "concurrency": a.concurrency, "prompt_words": a.prompt_words, "max_tokens": a.max_tokens}
    emit("share_meta", **meta)
    rc = 1
    try:
        share.start_base()
        emit("share_ready", phase="alone", seconds=share.start_worker("alone"))
        share.first("alone", share.http_port)
        for _ in range(a.runs):
            share.load("alone", "shoal", share.http_port)
        if a.engine == "sglang":
            emit("share_ready", phase="server", seconds=share.start_server())
            for _ in range(a.runs):
                share.load("resident", "shoal", share.http_port)
            share.load("resident", "sglang", share.sglang_port)
        share.stop_worker()
        emit("share_ready", phase="fresh", seconds=share.start_worker("fresh", cold=True))
        share.first("fresh", share.http_port)
        for _ in range(a.runs):
            share.load("fresh", "shoal", share.http_port)
        result = verdict(share.records)
        emit("share_verdict", **result)
        rc = 0 if result["ok"] else 1
    except Exception as e:
        emit("share_failed", error=repr(e)[:800])
    finally:
        share.stop()
        (out / "pools.txt").write_text(_pools(logs))
        with open(out / "share.jsonl", "a") as f:
            for rec in share.records:
                f.write(json.dumps({**meta, **rec}) + "\n")
        for path in logs.glob("*.log"):
            if path.name == "nats.log":
                continue
            (out / f"share-{path.name}").write_bytes(path.read_bytes()[-4_000_000:])
    raise SystemExit(exit_status(rc))


if __name__ == "__main__":
    main()
