"""Issue 22's request gate on every front door of the pipeline (issue 21): chat, completions, Responses,
Anthropic Messages and count_tokens (embeddings for the HTTP checks) all refuse what the gate refuses,
before a worker is asked, each in its own API's error shape; and what the gate rewrites (priority) reaches
the worker rewritten from every door; a worker's internal error reaches every door in generic words.
Fake registry and worker; real app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from protocol.discovery import ModelCard
from protocol.messages import EngineRequest, ErrorCode, OutputChunk, Usage
from services.frontend.app import FrontendApp, FrontendOptions
from services.frontend.dispatch import Dispatcher
from services.frontend.limits import RequestLimits
from services.frontend.models import ModelEntry
from shared.errors import client_message
from shared.http import Request, StreamingResponse
from shared.routing.base import RoundRobinRouter
from shared.runtime.errors import RemoteError
from shared.tokenizer import Tokenizer

JSON = {"content-type": "application/json"}
HI = [{"role": "user", "content": "hi"}]
DOORS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "chat", "messages": HI, "max_tokens": 3},
    "/v1/completions": {"model": "chat", "prompt": "hi", "max_tokens": 3},
    "/v1/responses": {"model": "chat", "input": "hi", "max_output_tokens": 3},
    "/v1/messages": {"model": "chat", "messages": HI, "max_tokens": 3},
    "/v1/messages/count_tokens": {"model": "chat", "messages": HI},
}
ANTHROPIC = ("/v1/messages", "/v1/messages/count_tokens")
GENERATE = [p for p in DOORS if p != "/v1/messages/count_tokens"]


class Worker:
    def __init__(self) -> None:
        self.instances = {"i1": SimpleNamespace(healthy=True)}
        self.seen: list[tuple[EngineRequest, str | None]] = []

    async def generate(self, request: Any, request_id: str, **kw: Any) -> AsyncIterator[list[OutputChunk]]:
        self.seen.append((request, kw.get("instance_id")))
        yield [OutputChunk(token_ids=[104, 105])]
        yield [OutputChunk(token_ids=[33], finish_reason="length", usage=Usage(3, 3, 0))]


def _app(tiny_model: Path, **opts: Any) -> tuple[FrontendApp, Worker]:
    worker = Worker()
    m = ModelEntry("chat", Tokenizer.from_dir(tiny_model), worker, RoundRobinRouter())  # type: ignore[arg-type]
    m.cards["i1"] = ModelCard(name="chat", instance_id="i1", component="backend", context_length=64)
    registry = SimpleNamespace(models={"chat": m}, serving=lambda: [m], get=lambda name: m if name == "chat" else None)
    return FrontendApp(registry, Dispatcher(), FrontendOptions(**opts)), worker  # type: ignore[arg-type]


async def _post(app: FrontendApp, path: str, body: dict[str, Any] | bytes,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await app(Request("POST", path, "", JSON if headers is None else headers, raw, None))
    data = b"".join([c async for c in resp.chunks]) if isinstance(resp, StreamingResponse) else resp.body
    return resp.status, json.loads(data)


def _shaped(path: str, status: int, body: dict[str, Any], want: int, code: str | None = None) -> None:
    """`body` is the API's own error: Anthropic's {"type": "error", ...} on its doors, OpenAI's elsewhere."""
    assert status == want, (path, body)
    if path in ANTHROPIC:
        assert body["type"] == "error" and body["error"]["type"] and body["error"]["message"], body
    else:
        assert body["error"]["message"] and body["error"]["type"], body
        if code is not None:
            assert body["error"]["code"] == code, body


@pytest.mark.parametrize("path", [*DOORS, "/v1/embeddings"])
async def test_http_checks_refuse_on_every_door_in_its_shape(tiny_model: Path, path: str) -> None:
    app, worker = _app(tiny_model, api_key="k", limits=RequestLimits(allowed_hosts=("api.example",)))
    body = DOORS.get(path, {"model": "chat", "input": "hi"})
    auth = {**JSON, "host": "api.example", "x-api-key": "k"}
    _shaped(path, *await _post(app, path, body, {**auth, "content-type": "text/plain"}), 415,
            "unsupported_media_type")
    _shaped(path, *await _post(app, path, body, {k: v for k, v in auth.items() if k != "content-type"}), 415)
    _shaped(path, *await _post(app, path, body, {**auth, "host": "evil.example"}), 400, "invalid_host")
    deep = b'{"model": "chat", "messages": ' + b"[" * 100 + b"]" * 100 + b"}"
    _shaped(path, *await _post(app, path, deep, auth), 400, "invalid_request")
    _shaped(path, *await _post(app, path, b'{"model": "chat", "seed": 18446744073709551616}', auth), 400)
    _shaped(path, *await _post(app, path, body, {**auth, "x-api-key": "wrong"}), 401, "invalid_api_key")
    assert worker.seen == []
    # the SDKs' own header values pass (httpx: application/json; others add a charset)
    status, _ = await _post(app, path, body, {**auth, "content-type": "application/json; charset=utf-8"})
    assert status != 415


@pytest.mark.parametrize("path", list(DOORS))
async def test_request_checks_run_in_the_pipeline_for_every_door(tiny_model: Path, path: str) -> None:
    app, worker = _app(tiny_model)
    body = DOORS[path]
    big = "x" * 3000  # 32 bytes x 64 tokens of context = 2048 bytes, checked before tokenizing
    long = {**body, "prompt": big} if "prompt" in body else (
        {**body, "input": big} if "input" in body else {**body, "messages": [{"role": "user", "content": big}]})
    _shaped(path, *await _post(app, path, long), 400, "context_length_exceeded")
    user = "u" * 300
    if path in ANTHROPIC:
        named = {**body, "metadata": {"user_id": user}}
    else:
        named = {**body, "user": user}
    if path != "/v1/messages/count_tokens":  # count_tokens takes no metadata
        _shaped(path, *await _post(app, path, named), 400)
    assert worker.seen == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_stop_token_ids_outside_the_vocabulary(tiny_model: Path, path: str) -> None:
    app, worker = _app(tiny_model)
    _shaped(path, *await _post(app, path, {**DOORS[path], "stop_token_ids": [10**9]}), 400)
    assert worker.seen == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("trusted", [False, True])
async def test_priority_reaches_the_worker_only_from_trusted_clients(tiny_model: Path, path: str,
                                                                     trusted: bool) -> None:
    app, worker = _app(tiny_model, limits=RequestLimits(allow_client_priority=trusted))
    status, body = await _post(app, path, {**DOORS[path], "priority": 7})
    assert status == 200, body
    assert worker.seen[0][0].priority == (7 if trusted else None)


@pytest.mark.parametrize("path", GENERATE)
async def test_direct_mode_instance_ids_are_checked_on_every_door(tiny_model: Path, path: str) -> None:
    app, worker = _app(tiny_model, router_mode="direct")
    bad = {**JSON, "x-shoal-instance-id": "a.b.>"}
    _shaped(path, *await _post(app, path, DOORS[path], bad), 400, "invalid_instance_id")
    assert worker.seen == []
    status, body = await _post(app, path, DOORS[path], {**JSON, "x-shoal-instance-id": "0123456789abcdef"})
    assert status == 200, body
    assert worker.seen[0][1] == "0123456789abcdef"


async def test_the_key_on_metrics_may_come_as_x_api_key(tiny_model: Path) -> None:
    app, _ = _app(tiny_model, api_key="k", limits=RequestLimits(protect_metrics=True))
    get = Request("GET", "/metrics", "", {}, b"", None)
    assert (await app(get)).status == 401
    assert (await app(Request("GET", "/metrics", "", {"x-api-key": "k"}, b"", None))).status == 200
    assert (await app(Request("GET", "/metrics", "", {"authorization": "Bearer k"}, b"", None))).status == 200


@pytest.mark.parametrize("path,body", [
    ("/v1/messages", {"model": "chat", "max_tokens": 3, "messages": [
        {"role": "user", "content": [{"type": "image", "source": "not an object"}]}]}),
    ("/v1/responses", {"model": "chat", "input": ["not an item"]}),
    ("/v1/responses", {"model": "chat", "input": "hi", "text": {"format": "json"}}),
])
async def test_malformed_nested_shapes_are_400s_in_the_doors_shape(tiny_model: Path, path: str,
                                                                   body: dict[str, Any]) -> None:
    app, worker = _app(tiny_model)
    _shaped(path, *await _post(app, path, body), 400)
    assert worker.seen == []


class FailingWorker(Worker):
    """Fails with exception text from deep inside a worker: before any token, or after the first batch."""

    def __init__(self, after_first: bool) -> None:
        super().__init__()
        self.after_first = after_first

    async def generate(self, request: Any, request_id: str, **kw: Any) -> AsyncIterator[list[OutputChunk]]:
        self.seen.append((request, kw.get("instance_id")))
        if self.after_first:
            yield [OutputChunk(token_ids=[104])]
        raise RemoteError("KeyError: '/srv/secret/weights.bin' in engine step", ErrorCode.INTERNAL)


@pytest.mark.parametrize("path", GENERATE)
@pytest.mark.parametrize("after_first", [False, True])
async def test_internal_errors_reach_every_door_as_generic_words(tiny_model: Path, path: str,
                                                                 after_first: bool) -> None:
    app, _ = _app(tiny_model)
    app.registry.models["chat"].client = FailingWorker(after_first)  # type: ignore[attr-defined]
    resp = await app(Request("POST", path, "", JSON, json.dumps({**DOORS[path], "stream": after_first}).encode(),
                             None))
    data = b"".join([c async for c in resp.chunks]) if isinstance(resp, StreamingResponse) else resp.body
    assert b"secret" not in data and b"KeyError" not in data, data
    assert client_message(ErrorCode.INTERNAL, "x").encode() in data, data
