"""/v1/embeddings in the frontend (fake registry and worker), and the worker's embedding flags."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from protocol.embeddings import EmbedRequest, EmbedResponse
from services.frontend.app import FrontendApp, FrontendOptions
from services.frontend.dispatch import Dispatcher
from services.frontend.embeddings import embedding_inputs, encode_vector
from services.frontend.models import ModelEntry
from services.frontend.openapi import openapi_document
from services.worker.args import parse as parse_worker
from shared.errors import BadRequest
from shared.http import Request
from shared.routing.base import RoundRobinRouter
from shared.tokenizer import Tokenizer


class FakeClient:
    """Stands in for EndpointClient: one live instance; `embed` answers each input with [len, sum]."""

    def __init__(self) -> None:
        self.instances = {"i1": SimpleNamespace(healthy=True)}
        self.sent: list[Any] = []

    async def generate(self, request: Any, request_id: str, **kw: Any) -> AsyncIterator[list[Any]]:
        self.sent.append(request)
        assert isinstance(request, EmbedRequest)
        yield [EmbedResponse([[float(len(x)), float(sum(x))] for x in request.inputs],
                             sum(len(x) for x in request.inputs))]


class FakeRegistry:
    def __init__(self, models: list[ModelEntry]) -> None:
        self.models = {m.name: m for m in models}

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def serving(self) -> list[ModelEntry]:
        return list(self.models.values())


def entry(name: str, tok: Tokenizer, model_type: str, context_length: int = 16) -> ModelEntry:
    from protocol.discovery import ModelCard

    m = ModelEntry(name, tok, FakeClient(), RoundRobinRouter(), model_type=model_type)  # type: ignore[arg-type]
    m.cards["i1"] = ModelCard(name=name, instance_id="i1", component="backend", model_type=model_type,
                              context_length=context_length)
    return m


@pytest.fixture
def app(tiny_model: Path) -> FrontendApp:
    tok = Tokenizer.from_dir(tiny_model)
    reg = FakeRegistry([entry("emb", tok, "embedding"), entry("chat", tok, "chat")])
    return FrontendApp(reg, Dispatcher(), FrontendOptions())  # type: ignore[arg-type]


async def call(app: FrontendApp, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await app(Request("POST", path, "", {"content-type": "application/json"}, json.dumps(body).encode(), None))
    return resp.status, json.loads(resp.body)


async def test_embeddings_route_answers_in_openai_shape(app: FrontendApp) -> None:
    status, body = await call(app, "/v1/embeddings", {"model": "emb", "input": ["a", "bb"], "user": "u"})
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == "emb"
    assert body["data"] == [{"object": "embedding", "index": 0, "embedding": [1.0, 97.0]},
                            {"object": "embedding", "index": 1, "embedding": [2.0, 196.0]}]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    status, b64 = await call(app, "/v1/embeddings", {"model": "emb", "input": [[1, 2, 3]],
                                                     "encoding_format": "base64"})
    assert status == 200
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert list(struct.unpack("<2f", raw)) == [3.0, 6.0]
    status, _ = await call(app, "/v1/embeddings", {"model": "emb", "input": "abc", "dimensions": 2})
    assert status == 200
    sent = app.registry.get("emb").client.sent  # type: ignore[union-attr]
    assert [r.inputs for r in sent] == [[[97], [98, 98]], [[1, 2, 3]], [[97, 98, 99]]]
    status, err = await call(app, "/v1/embeddings", {"model": "emb", "input": "abc", "dimensions": 5})
    assert status == 400 and err["error"]["param"] == "dimensions"
    assert len(sent) == 3  # the dimension is known by now: refused before any worker is asked


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"model": "nope", "input": "a"}, 404, "model_not_found"),
    ({"model": "chat", "input": "a"}, 400, "model_not_embedding"),
    ({"model": "emb", "input": ""}, 400, "bad_request"),
    ({"model": "emb", "input": []}, 400, "bad_request"),
    ({"model": "emb", "input": [[]]}, 400, "bad_request"),
    ({"model": "emb", "input": ["a", 1]}, 400, "bad_request"),
    ({"model": "emb", "input": "x" * 17}, 400, "context_length_exceeded"),
    ({"model": "emb", "input": [[999999]]}, 400, "bad_request"),
    ({"model": "emb", "input": "a", "dimensions": 3}, 400, "invalid_value"),
    ({"model": "emb", "input": "a", "encoding_format": "int8"}, 400, "invalid_request"),
    ({"model": "emb", "input": [True]}, 400, "invalid_request"),
])
async def test_embeddings_route_refuses_bad_requests(app: FrontendApp, body: dict[str, Any], status: int,
                                                     code: str) -> None:
    got, err = await call(app, "/v1/embeddings", body)
    assert (got, err["error"]["code"]) == (status, code), err
    assert err["error"]["type"] == "invalid_request_error"
    assert app.dispatcher.inflight == 0


async def test_generation_routes_refuse_embedding_models(app: FrontendApp) -> None:
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/v1/completions", {"prompt": "hi"})):
        status, err = await call(app, path, {"model": "emb", **body})
        assert status == 400 and err["error"]["code"] == "model_not_generative", err
        assert "embedding model" in err["error"]["message"]


async def test_models_lists_both_kinds(app: FrontendApp) -> None:
    resp = await app(Request("GET", "/v1/models", "", {}, b"", None))
    assert sorted(m["id"] for m in json.loads(resp.body)["data"]) == ["chat", "emb"]


async def test_embedding_inputs_shapes(tiny_model: Path) -> None:
    tok = Tokenizer.from_dir(tiny_model)
    assert await embedding_inputs(tok, "ab", 8) == [[97, 98]]
    assert await embedding_inputs(tok, ["a", "b"], 8) == [[97], [98]]
    assert await embedding_inputs(tok, [5, 6], 8) == [[5, 6]]
    assert await embedding_inputs(tok, [[5], [6, 7]], 8) == [[5], [6, 7]]
    with pytest.raises(BadRequest) as err:
        await embedding_inputs(tok, ["abc", "abcd"], 8, max_prompt_tokens=3)
    assert "input 1" in err.value.message and err.value.code == "context_length_exceeded"
    with pytest.raises(BadRequest) as err:  # --max-prompt-bytes, before tokenizing: bytes, not characters
        await embedding_inputs(tok, ["ab", "日本"], 8, max_prompt_bytes=5)
    assert "input 1" in err.value.message and err.value.code == "context_length_exceeded"


def test_base64_is_little_endian_float32() -> None:
    vec = [0.1, -2.5, 3.0]
    got = encode_vector(vec, "base64")
    assert isinstance(got, str)
    back = struct.unpack("<3f", base64.b64decode(got))
    assert all(abs(a - b) < 1e-7 for a, b in zip(back, vec, strict=True))
    assert encode_vector(vec, "float") is vec


def test_openapi_lists_embeddings() -> None:
    doc = openapi_document()
    post = doc["paths"]["/v1/embeddings"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("EmbeddingRequest")
    assert "EmbeddingResponse" in doc["components"]["schemas"]
    msgspec.json.encode(doc)


def test_worker_embedding_flags(tmp_path: Path) -> None:
    model = ["--model-path", str(tmp_path)]
    cfg = parse_worker(["--engine", "mock", "--embedding", *model])
    assert cfg.embedding and cfg.endpoint == "embed"
    cfg = parse_worker(["--engine", "mock", *model])
    assert not cfg.embedding and cfg.endpoint == "generate"
    cfg = parse_worker(["--engine", "sglang", "--is-embedding", *model])
    assert cfg.embedding and cfg.endpoint == "embed" and cfg.engine.extra_args.count("--is-embedding") == 1
    cfg = parse_worker(["--engine", "sglang", "--embedding", *model])
    assert cfg.embedding and "--is-embedding" in cfg.engine.extra_args
    with pytest.raises(SystemExit):
        parse_worker(["--engine", "mock", "--embedding", "--disaggregation-mode", "decode", *model])
