"""The small endpoints in the frontend (fake registry and workers): auth on the bare paths, rerank by
embedding cosine, validation before any worker, tokenize/detokenize, and echo + max_tokens 0 checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from services.frontend.app import FrontendApp, FrontendOptions
from services.frontend.dispatch import Dispatcher
from shared.http import Request
from shared.tokenizer import Tokenizer
from tests.unit.test_embeddings_api import FakeRegistry, entry


@pytest.fixture
def app(tiny_model: Path) -> FrontendApp:
    tok = Tokenizer.from_dir(tiny_model)
    reg = FakeRegistry([entry("emb", tok, "embedding", 64), entry("chat", tok, "chat", 64)])
    return FrontendApp(reg, Dispatcher(), FrontendOptions(max_rerank_documents=3))  # type: ignore[arg-type]


async def call(app: FrontendApp, path: str, body: Any, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, Any]]:
    sent = {"content-type": "application/json", **(headers or {})}
    resp = await app(Request("POST", path, "", sent, json.dumps(body).encode(), None))
    return resp.status, json.loads(resp.body)


async def test_rerank_by_embedding_cosine_and_validation_before_the_worker(app: FrontendApp) -> None:
    status, body = await call(app, "/v1/rerank", {"model": "emb", "query": "ab", "documents": ["a", {"text": "abc"}]})
    assert status == 200, body
    # the fake worker embeds each input as [number of tokens, sum of ids]
    sent = app.registry.models["emb"].client.sent
    assert len(sent) == 1 and len(sent[0].inputs) == 3  # one call, each distinct text once

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)

    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    q, docs = sent[0].inputs[0], sent[0].inputs[1:]
    want = [cos([len(q), sum(q)], [len(d), sum(d)]) for d in docs]
    assert got == pytest.approx(dict(enumerate(want)))
    assert [r["index"] for r in body["results"]] == sorted(range(2), key=lambda i: -want[i])
    for bad in ({"model": "emb", "query": "q", "documents": ["a"] * 4},  # beyond --max-rerank-documents 3
                {"model": "emb", "query": "", "documents": ["a"]}, {"model": "emb", "query": "q", "documents": []},
                {"model": "emb", "query": "q", "documents": [{"txt": "a"}]}, {"model": "chat", "query": "q",
                                                                             "documents": ["a"]}):
        status, err = await call(app, "/rerank", bad)
        assert status == 400 and err["error"]["message"], (bad, err)
    status, err = await call(app, "/v1/score", {"model": "emb", "text_1": ["a", "b"], "text_2": ["c"] * 3})
    assert status == 400 and err["error"]["param"] == "text_2"
    assert len(sent) == 1  # none of them reached the worker


async def test_tokenize_detokenize_and_the_api_key_on_bare_paths(tiny_model: Path) -> None:
    tok = Tokenizer.from_dir(tiny_model)
    reg = FakeRegistry([entry("chat", tok, "chat", 64)])
    app = FrontendApp(reg, Dispatcher(), FrontendOptions(api_key="k"))  # type: ignore[arg-type]
    for path in ("/tokenize", "/detokenize", "/rerank", "/score", "/v2/rerank", "/v1/tokenize"):
        status, err = await call(app, path, {})
        assert status == 401, (path, err)
    auth = {"authorization": "Bearer k"}
    status, t = await call(app, "/tokenize", {"prompt": "hi"}, auth)  # the one model served: no name needed
    assert status == 200 and t["tokens"] == tok.encode("hi", True)
    status, d = await call(app, "/detokenize", {"tokens": t["tokens"]}, auth)
    assert status == 200 and tok.encode(d["text"]) == t["tokens"]


async def test_echo_checks(app: FrontendApp) -> None:
    status, err = await call(app, "/v1/completions", {"model": "chat", "prompt": "hi", "max_tokens": 0})
    assert status == 400 and err["error"]["param"] == "max_tokens"
    status, err = await call(app, "/v1/completions", {"model": "chat", "prompt": [[1, 2], [3]]})
    assert status == 400 and err["error"]["param"] == "prompt"
