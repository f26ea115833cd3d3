"""n = 2 requests get what n = 1 requests get, in one place (services.frontend.pipeline): the TTFT metric,
the frontend.request span (its trace context sent to the worker), the x-shoal-worker header, and a 429
before the first token when every worker is full — streamed or not. Fake registry and worker; real app."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from protocol.discovery import ModelCard
from protocol.messages import ErrorCode, OutputChunk, Usage
from services.frontend.app import FrontendApp, FrontendOptions
from services.frontend.dispatch import Dispatcher
from services.frontend.models import ModelEntry
from shared.http import Request, StreamingResponse
from shared.routing.base import RoundRobinRouter
from shared.runtime.errors import RemoteError
from shared.telemetry.metrics import render_metrics
from shared.tokenizer import Tokenizer

JSON = {"content-type": "application/json"}  # the request gate answers other POSTs 415

class FakeWorker:
    """One live instance: three tokens, or OVERLOADED before any when `full`."""

    def __init__(self) -> None:
        self.instances = {"i1": SimpleNamespace(healthy=True)}
        self.full = False
        self.headers: list[dict[str, str]] = []

    async def generate(self, request: Any, request_id: str, **kw: Any) -> AsyncIterator[list[OutputChunk]]:
        self.headers.append(dict(kw.get("headers") or {}))
        if self.full:
            raise RemoteError("the worker is full", ErrorCode.OVERLOADED)
        yield [OutputChunk(token_ids=[104, 105])]
        yield [OutputChunk(token_ids=[33], finish_reason="length", usage=Usage(3, 3, 0))]


class FakeRegistry:
    def __init__(self, model: ModelEntry) -> None:
        self.models = {model.name: model}

    def serving(self) -> list[ModelEntry]:
        return list(self.models.values())


@pytest.fixture
def app(tiny_model: Path) -> FrontendApp:
    worker = FakeWorker()
    m = ModelEntry("chat", Tokenizer.from_dir(tiny_model), worker, RoundRobinRouter())  # type: ignore[arg-type]
    m.cards["i1"] = ModelCard(name="chat", instance_id="i1", component="backend", context_length=64)
    return FrontendApp(FakeRegistry(m), Dispatcher(), FrontendOptions())  # type: ignore[arg-type]


def _ttft_count() -> float:
    text = render_metrics()[0].decode()
    found = re.search(r"^shoal_frontend_ttft_seconds_count(?:\{\})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def _post(app: FrontendApp, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    resp = await app(Request("POST", path, "", JSON, json.dumps(body).encode(), None))
    data = b"".join([c async for c in resp.chunks]) if isinstance(resp, StreamingResponse) else resp.body
    return resp.status, dict(resp.headers or []), data


BODIES = {"/v1/chat/completions": {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
          "/v1/completions": {"model": "chat", "prompt": "hi", "max_tokens": 3}}


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("n", [1, 2])
async def test_every_n_gets_ttft_span_worker_header_and_early_429(app: FrontendApp, spans: InMemorySpanExporter,
                                                                  path: str, stream: bool, n: int) -> None:
    worker: FakeWorker = app.registry.models["chat"].client  # type: ignore[attr-defined]
    body = {**BODIES[path], "n": n, "stream": stream}
    before = _ttft_count()
    status, headers, data = await _post(app, path, body)
    assert status == 200, data
    assert headers.get("x-shoal-worker") == "i1"
    assert _ttft_count() == before + 1  # one time to first token per request, whatever n
    requests = [s for s in spans.get_finished_spans() if s.name == "frontend.request"]
    assert len(requests) == 1
    trace_id = f"{requests[0].context.trace_id:032x}"
    assert len(worker.headers) == n and all(trace_id in h.get("traceparent", "") for h in worker.headers)

    worker.full = True  # every worker full: 429 with Retry-After before any byte of the answer
    status, headers, data = await _post(app, path, body)
    assert status == 429, data
    assert "Retry-After" in headers and json.loads(data)["error"]["code"] == "overloaded"
    assert getattr(app.dispatcher, "inflight", getattr(app, "inflight", 0)) == 0  # (77fe6f6 counted on the app)


@pytest.mark.parametrize("n", [1, 2])
async def test_a_client_leaving_a_stream_counts_the_request_out_at_once(app: FrontendApp, n: int) -> None:
    body = {**BODIES["/v1/chat/completions"], "n": n, "stream": True}
    resp = await app(Request("POST", "/v1/chat/completions", "", JSON, json.dumps(body).encode(), None))
    assert isinstance(resp, StreamingResponse) and app.dispatcher.inflight == 1
    await anext(resp.chunks)
    await resp.chunks.aclose()  # type: ignore[attr-defined]  # what the server does when the client goes
    assert app.dispatcher.inflight == 0
