"""Fuzz the frontend for a bounded time (issue 22): random and mutated JSON bodies, hostile headers, random
JSON schemas, raw malformed requests. Fails (exit 1) on any 5xx, a dead frontend or worker, a worker the
frontend no longer lists, or a normal request that is no longer served.

    python -m tests.bench.bench_fuzz --seconds 120          # own cluster (nats, mock worker, frontend)
    just bench --only fuzz

tests/integration/test_hostile_clients.py runs `fuzz` for a few seconds against its cluster (the smoke run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ALLOWED = {200, 400, 401, 404, 405, 408, 413, 415, 422, 429, 431}
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings", "/v1/messages",
          "/v1/messages/count_tokens")
_WEIRD: list[Any] = [None, True, -1, 0, 2**63, 2**64 + 1, -(2**70), 1e308, -0.0, "", "x" * 300, [], {}, [[[]]],
                     {"a": {"b": None}}, "\u0000", "\ud7ff", "[[[{", 10**30]


def _valid(model: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    route = rng.choice(ROUTES)
    if route == "/v1/completions":
        return route, {"model": model, "prompt": "hello", "max_tokens": 2}
    if route == "/v1/responses":
        return route, {"model": model, "input": [{"type": "message", "role": "user", "content": "hi"}],
                       "max_output_tokens": 2}
    if route == "/v1/embeddings":
        return route, {"model": model, "input": "hi"}
    if route.startswith("/v1/messages"):  # Anthropic's Messages API (count_tokens ignores max_tokens' absence)
        content = rng.choice(["hi", [{"type": "text", "text": "hi"}], [{"type": "image", "source": "x"}],
                              [{"type": "tool_result", "tool_use_id": "nope"}], [{"type": 5}], ["hi"]])
        return route, {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2,
                       "stream": rng.random() < 0.3}
    return route, {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                   "stream": rng.random() < 0.3}


_FIELDS = ["stop_token_ids", "logit_bias", "min_tokens", "max_tokens", "seed", "user", "priority", "n", "stop",
           "tool_choice", "tools", "response_format", "regex", "ebnf", "choice", "logprobs", "top_logprobs",
           "temperature", "top_p", "stream_options", "messages", "prompt", "input", "text", "reasoning", "model",
           "system", "metadata", "thinking", "output_config", "stop_sequences", "top_k"]


def random_schema(rng: random.Random, depth: int = 0) -> Any:
    """A JSON schema, often valid, sometimes with wrong-typed keywords, sometimes deep."""
    if rng.random() < 0.1:
        return rng.choice(_WEIRD)
    kind = rng.choice(["object", "array", "string", "integer", "number", "boolean", "null", "enum", "anyOf"])
    if depth > rng.choice([3, 6, 40]):
        kind = "string"
    if kind == "object":
        props = {f"p{i}": random_schema(rng, depth + 1) for i in range(rng.randrange(0, 4))}
        s: dict[str, Any] = {"type": "object", "properties": props, "required": list(props)[: rng.randrange(0, 3)]}
    elif kind == "array":
        s = {"type": "array", "items": random_schema(rng, depth + 1), "maxItems": rng.choice([1, 3, "x", -1])}
    elif kind == "string":
        s = {"type": "string"}
        for key in ("minLength", "maxLength", "pattern", "format"):
            if rng.random() < 0.3:
                s[key] = rng.choice([0, 3, 10**9, "abc", -5, 2.5, "[a-z]+", "(((", "date-time", None])
    elif kind == "enum":
        s = {"enum": [rng.choice(_WEIRD) for _ in range(rng.randrange(0, 6))]}
    elif kind == "anyOf":
        s = {"anyOf": [random_schema(rng, depth + 1) for _ in range(rng.randrange(0, 3))]}
    else:
        s = {"type": kind}
        if kind in ("integer", "number") and rng.random() < 0.4:
            s["minimum"], s["maximum"] = rng.choice(_WEIRD), rng.choice(_WEIRD)
    return s


def mutate(body: dict[str, Any], model: str, rng: random.Random) -> dict[str, Any]:
    for _ in range(rng.randrange(1, 4)):
        roll = rng.random()
        field = rng.choice(_FIELDS)
        if roll < 0.25:
            body.pop(rng.choice(list(body) or ["model"]), None)
        elif roll < 0.55:
            body[field] = rng.choice(_WEIRD)
        elif roll < 0.75:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x",
                                                                              "schema": random_schema(rng)}}
        elif roll < 0.85:
            body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": random_schema(rng)}}]
            body["tool_choice"] = rng.choice(["required", "auto", {"type": "function", "function": "f"},
                                              {"type": "function", "function": {"name": "f"}}, 7])
        else:
            body[field] = {"stop_token_ids": [rng.choice([-1, 10**12, 5])], "logit_bias": {"999999": 1},
                           "min_tokens": 1, "user": "u" * rng.choice([10, 10_000])}.get(field, rng.choice(_WEIRD))
    body.setdefault("model", model)
    return body


def _nest(n: int) -> bytes:
    return b"[" * n + b"]" * n


def raw_body(body: dict[str, Any], model: str, rng: random.Random) -> bytes:
    data = json.dumps(mutate(body, model, rng)).encode()
    roll = rng.random()
    if roll < 0.1 and data:  # flip bytes
        b = bytearray(data)
        for _ in range(rng.randrange(1, 5)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if roll < 0.15:
        return data[: rng.randrange(len(data) + 1)]
    if roll < 0.2:
        return b'{"model": "%b", "messages": %b}' % (model.encode(), _nest(rng.choice([70, 1000, 5000])))
    return data


def random_headers(rng: random.Random, length: int) -> dict[str, str]:
    h = {"content-type": "application/json", "content-length": str(length)}
    roll = rng.random()
    if roll < 0.1:
        h["content-type"] = rng.choice(["text/plain", "", "application/jsonx", "multipart/form-data",
                                        "application/json; charset=utf-8"])
    elif roll < 0.15:
        h["host"] = rng.choice(["evil.example", "", "[::1]:1", "a" * 2000])
    elif roll < 0.2:
        h["x-shoal-instance-id"] = rng.choice(["a b", "*", "x.>", "0" * 16, "\t"])
    elif roll < 0.25:
        h["x-session-id"] = "s" * rng.choice([10, 300])
    elif roll < 0.3:
        h["authorization"] = rng.choice(["Bearer ", "Basic x", "Bearer " + "k" * 5000])
    elif roll < 0.35:
        h["expect"] = "100-continue"
    return h


def send_raw(port: int, head: bytes, body: bytes, timeout: float = 30.0) -> int:
    """The status of one raw request; 0 when the server closed without answering (allowed for garbage)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + body)
        data = b""
        while True:
            if data.startswith(b"HTTP/1.1 100 ") and b"\r\n\r\n" in data:
                data = data.split(b"\r\n\r\n", 1)[1]  # the interim answer to Expect: 100-continue
                continue
            if b"\r\n" in data and not data.startswith(b"HTTP/1.1 100 "):
                return int(data[9:12])
            chunk = s.recv(4096)
            if not chunk:
                return 0
            data += chunk


def one(port: int, model: str, rng: random.Random) -> tuple[int, str]:
    roll = rng.random()
    if roll < 0.08:  # header floods, odd request lines
        head = rng.choice([b"GET /v1/models HTTP/1.1\r\nhost: x\r\n" + b"x-a: \r\n" * rng.choice([50, 500, 5000]),
                           b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
                           b"content-length: 3\r\n", b"GARBAGE\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n"])
        return send_raw(port, head + b"\r\n", b""), repr(head[:80])
    route, valid = _valid(model, rng)
    body = raw_body(valid, model, rng)
    headers = random_headers(rng, len(body))
    head = f"POST {route} HTTP/1.1\r\n".encode() + b"".join(
        f"{k}: {v}\r\n".encode("latin-1", "replace") for k, v in headers.items()) + b"connection: close\r\n\r\n"
    return send_raw(port, head, body), f"{route} {headers} {body[:300]!r}"


def normal_ok(port: int, model: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps({
            "model": model, "messages": [{"role": "user", "content": "ok"}], "max_tokens": 2}),
            {"content-type": "application/json"})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def fuzz(port: int, model: str, seconds: float, seed: int = 0, alive: Callable[[], list[str]] | None = None,
         max_requests: int | None = None) -> tuple[dict[int, int], list[str]]:
    """How many requests got each status, and the failures seen in `seconds` of fuzzing (or `max_requests`)."""
    rng = random.Random(seed)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(failures) < 20 and sum(statuses.values()) != max_requests:
        try:
            status, what = one(port, model, rng)
        except OSError as e:
            failures.append(f"connection failed ({e}) after {sum(statuses.values())} requests")
            break
        statuses[status] = statuses.get(status, 0) + 1
        if status not in ALLOWED and status != 0:
            failures.append(f"status {status}: {what}")
    if alive is not None:
        failures += alive()
    if not normal_ok(port, model):
        failures.append("a normal request is no longer served")
    return statuses, failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-report", action="store_true")  # nothing is written to docs/: the result is the exit code
    args = ap.parse_args()
    from shared.model.tiny import make_tiny
    from tests.bench.local_cluster import bench_cluster

    with tempfile.TemporaryDirectory(prefix="shoal-fuzz-") as d:
        work = Path(d)
        model = make_tiny(work / "tiny")
        with bench_cluster(work, model, ["--engine", "mock", "--speedup-ratio", "1000"], namespace="fuzz") as c:
            port = int(c.url.rsplit(":", 1)[1])

            def alive() -> list[str]:
                dead = [p.name for p in [*c.workers, c.frontend] if not p.alive()]
                with urllib_open(c.url + "/health") as health:
                    listed = json.loads(health).get("instances", 0)
                return [f"{n} exited" for n in dead] + ([] if listed >= len(c.workers) else ["a worker was lost"])

            started = time.monotonic()
            statuses, failures = fuzz(port, model.name, args.seconds, args.seed, alive)
            took = time.monotonic() - started
    print(f"fuzz: {sum(statuses.values())} requests in {took:.0f} s, statuses {dict(sorted(statuses.items()))}, "
          f"{len(failures)} failures")
    for f in failures:
        print("  FAIL", f[:500])
    sys.exit(1 if failures else 0)


def urllib_open(url: str) -> Any:
    import contextlib
    import urllib.request

    @contextlib.contextmanager
    def opened() -> Any:
        with urllib.request.urlopen(url, timeout=10) as r:
            yield r.read()

    return opened()


if __name__ == "__main__":
    main()
