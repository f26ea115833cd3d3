"""GPU proof: structured output and forced tool calls on SGLang, through shoal's frontend (issue 25).

    prove_struct.py MODEL_DIR OUTDIR [--engine sglang|reference] [--n 20]

Starts nats-server, a worker (`--engine sglang`, the proof's SGLang flags, `--tool-call-parser qwen25`) and
the frontend, then over HTTP, greedy, one request at a time:
  s_json_schema      N bounded random JSON schemas as `response_format: json_schema`: every answer is JSON
                     valid under its schema and ends with finish_reason "stop" (not max_tokens)
  s_tool_required    N requests with 1-2 tools (parameters from the same generator) and `tool_choice:
                     "required"`: HTTP 200, at least one call, each call names a given tool, arguments valid
Every result is one JSON line (OUTDIR/struct_items.jsonl: one line per request). `--engine reference`
rehearses it on a CPU machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from prove import SGLANG_FLAGS, emit, exit_status

from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import ServiceProc, spawn

NS = "prove"
MODEL_NAME = "tiny"
MAX_TOKENS = 256
READY_TIMEOUT = 420.0
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]


def schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A bounded object schema: 1-4 required properties, no extra ones, every string and array bounded."""
    props: dict[str, Any] = {}
    for i in range(rng.randint(1, 4)):
        kind = rng.choice(["integer", "boolean", "enum", "string", "array", "object" if depth == 0 else "integer"])
        name = f"{rng.choice(WORDS)}_{i}"
        if kind == "integer":
            lo = rng.randint(-50, 50)
            props[name] = {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(0, 100)}
        elif kind == "boolean":
            props[name] = {"type": "boolean"}
        elif kind == "enum":
            props[name] = {"type": "string", "enum": rng.sample(WORDS, rng.randint(2, 4))}
        elif kind == "string":
            props[name] = {"type": "string", "minLength": 1, "maxLength": rng.randint(2, 10)}
        elif kind == "array":
            props[name] = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                           "minItems": 1, "maxItems": rng.randint(1, 3)}
        else:
            props[name] = schema(rng, depth + 1)
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def tools(rng: random.Random) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f"tool_{rng.choice(WORDS)}_{i}", "description": "a tool",
                                              "parameters": schema(rng)}}
            for i in range(rng.randint(1, 2))]


def _valid(value: Any, spec: dict[str, Any]) -> str | None:
    import jsonschema

    try:
        jsonschema.validate(value, spec)
    except jsonschema.ValidationError as e:
        return e.message[:160]
    return None


async def check_json_schema(s: Any, port: int, n: int, items: list[dict[str, Any]]) -> None:
    rng = random.Random(25)
    good, finish = 0, {}
    for i in range(n):
        spec = schema(rng)
        body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": f"Give me JSON number {i}."}],
                "max_tokens": MAX_TOKENS, "temperature": 0,
                "response_format": {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": spec}}}
        status, out = await _post(s, port, body)
        choice = (out.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        reason = choice.get("finish_reason")
        finish[reason] = finish.get(reason, 0) + 1
        try:
            err = _valid(json.loads(text), spec) if status == 200 else f"HTTP {status}: {str(out)[:160]}"
        except ValueError as e:
            err = f"not JSON: {e}"
        ok = err is None and reason == "stop"
        good += ok
        items.append({"kind": "json_schema", "i": i, "ok": ok, "status": status, "finish_reason": reason,
                      "error": err, "text": text[:400], "schema": spec})
    emit("s_json_schema_valid", ok=good == n, valid=good, of=n, finish_reasons=finish)


async def check_tool_required(s: Any, port: int, n: int, items: list[dict[str, Any]]) -> None:
    rng = random.Random(2525)
    good, statuses = 0, {}
    for i in range(n):
        given = tools(rng)
        by_name = {t["function"]["name"]: t["function"]["parameters"] for t in given}
        body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": f"Call a tool, please ({i})."}],
                "max_tokens": MAX_TOKENS, "temperature": 0, "tools": given, "tool_choice": "required"}
        status, out = await _post(s, port, body)
        statuses[status] = statuses.get(status, 0) + 1
        msg = ((out.get("choices") or [{}])[0].get("message") or {})
        calls = msg.get("tool_calls") or []
        err = None if status == 200 else f"HTTP {status}: {str(out)[:200]}"
        if err is None and not calls:
            err = f"no tool call: {str(msg.get('content'))[:160]}"
        for call in calls if err is None else []:
            fn = call.get("function") or {}
            if fn.get("name") not in by_name:
                err = f"unknown tool {fn.get('name')!r}"
                break
            try:
                err = _valid(json.loads(fn.get("arguments") or ""), by_name[fn["name"]])
            except ValueError as e:
                err = f"arguments not JSON: {e}"
            if err:
                break
        good += err is None
        items.append({"kind": "tool_required", "i": i, "ok": err is None, "status": status, "calls": calls,
                      "error": err, "finish_reason": (out.get("choices") or [{}])[0].get("finish_reason")})
    emit("s_tool_required_valid", ok=good == n, valid=good, of=n, http_status=statuses)


async def _post(s: Any, port: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, {"raw": text[:400]}


async def amain(a: argparse.Namespace) -> int:
    import aiohttp

    logs = Path(tempfile.mkdtemp(prefix="prove-struct-"))
    nats = NatsServer(logs / "nats-data", log_file=logs / "nats.log")
    procs: dict[str, ServiceProc] = {}
    port = free_port()
    items: list[dict[str, Any]] = []
    rc = 1
    try:
        nats.start()
        common = ["--nats-url", nats.url, "--namespace", NS]
        flags = SGLANG_FLAGS if a.engine == "sglang" else []
        procs["worker"] = spawn("worker", "decode", [*common, "--engine", a.engine, "--model-path", a.model,
                                                     "--served-model-name", MODEL_NAME, "--tool-call-parser",
                                                     "qwen25", *flags], logs)
        procs["frontend"] = spawn("frontend", "frontend", [*common, "--http-port", str(port)], logs)
        t0 = time.monotonic()
        for proc in procs.values():
            await asyncio.to_thread(proc.wait_ready, READY_TIMEOUT - (time.monotonic() - t0))
        await asyncio.to_thread(wait_port, "127.0.0.1", port, 30)
        emit("s_cluster_ready", seconds=round(time.monotonic() - t0, 1), engine=a.engine)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
            await _wait_model(s, port)
            await check_json_schema(s, port, a.n, items)
            await check_tool_required(s, port, a.n, items)
        rc = 0
    except Exception as e:
        emit("s_failed", error=repr(e)[:600])
        for name, proc in procs.items():
            print(f"----- {name} log tail -----\n{proc.tail(60)}", flush=True)
    finally:
        await asyncio.to_thread(Path(a.outdir, "struct_items.jsonl").write_text,
                                "".join(json.dumps(x) + "\n" for x in items))
        for proc in reversed(list(procs.values())):
            with contextlib.suppress(Exception):
                proc.stop(30)
        nats.stop()
    return rc


async def _wait_model(s: Any, port: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            async with s.get(f"http://127.0.0.1:{port}/v1/models") as r:
                if MODEL_NAME in await r.text():
                    return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"model {MODEL_NAME} not listed by the frontend after {timeout}s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("outdir")
    p.add_argument("--engine", default="sglang", choices=("sglang", "reference"))
    p.add_argument("--n", type=int, default=20)
    a = p.parse_args()
    raise SystemExit(exit_status(asyncio.run(amain(a))))


if __name__ == "__main__":
    main()
