"""logprobs `bytes` are each token's own bytes (byte-level tokens too, not the UTF-8 of U+FFFD), in
`content` and in `top_logprobs`: joined, they decode to the response text. Real app, fake worker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from protocol.discovery import ModelCard
from protocol.messages import OutputChunk, TopLogprob, Usage
from services.frontend.app import FrontendApp, FrontendOptions
from services.frontend.dispatch import Dispatcher
from services.frontend.models import ModelEntry
from shared.http import Request, StreamingResponse
from shared.routing.base import RoundRobinRouter
from shared.tokenizer import Tokenizer
from shared.tokenizer.token_bytes import token_bytes

JSON = {"content-type": "application/json"}  # the request gate answers other POSTs 415
TEXT = "héllo ✓ 日本 🎉 ok"


class Worker:
    """Streams `ids` two at a time with a logprob each; the top alternatives are the token and the next byte."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.instances = {"i1": SimpleNamespace(healthy=True)}

    async def generate(self, request: Any, request_id: str, **kw: Any) -> AsyncIterator[list[OutputChunk]]:
        for i in range(0, len(self.ids), 2):
            part = self.ids[i : i + 2]
            last = i + 2 >= len(self.ids)
            yield [OutputChunk(token_ids=part, logprobs=[-0.5] * len(part),
                               top_logprobs=[[TopLogprob(t, -0.5), TopLogprob((t + 1) % 256, -2.0)] for t in part],
                               finish_reason="length" if last else None,
                               usage=Usage(3, len(self.ids)) if last else None)]


@pytest.fixture
def tok(tiny_model: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model)


def test_every_byte_level_token_has_its_own_byte(tok: Tokenizer) -> None:
    byte_tokens = [i for i in range(tok.vocab_size) if tok.decode([i], skip_special_tokens=False) == "\ufffd"]
    assert len(byte_tokens) == 128  # 0x80..0xFF: no character alone
    assert all(token_bytes(tok, i) == bytes([i]) for i in range(256))


@pytest.mark.parametrize("stream", [False, True])
async def test_joined_logprob_bytes_decode_to_the_response_text(tok: Tokenizer, stream: bool) -> None:
    ids = tok.encode(TEXT)
    m = ModelEntry("chat", tok, Worker(ids), RoundRobinRouter())  # type: ignore[arg-type]
    m.cards["i1"] = ModelCard(name="chat", instance_id="i1", component="backend", context_length=128)
    app = FrontendApp(SimpleNamespace(models={"chat": m}, serving=lambda: [m]), Dispatcher(),  # type: ignore[arg-type]
                      FrontendOptions())
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": len(ids),
            "logprobs": True, "top_logprobs": 2, "stream": stream}
    resp = await app(Request("POST", "/v1/chat/completions", "", JSON, json.dumps(body).encode(), None))
    assert resp.status == 200
    if isinstance(resp, StreamingResponse):
        raw = b"".join([c async for c in resp.chunks])
        chunks = [json.loads(f[6:]) for f in raw.split(b"\n\n") if f.startswith(b"data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        content = [e for c in chunks if c["choices"] and c["choices"][0]["logprobs"]
                   for e in c["choices"][0]["logprobs"]["content"]]
    else:
        choice = json.loads(resp.body)["choices"][0]
        text, content = choice["message"]["content"], choice["logprobs"]["content"]
    assert text == TEXT
    assert len(content) == len(ids)
    assert bytes(b for e in content for b in e["bytes"]).decode() == TEXT
    assert [bytes(e["bytes"]) for e in content] == [token_bytes(tok, i) for i in ids]
    for i, e in zip(ids, content, strict=True):  # the alternatives carry their own bytes as well
        assert [bytes(t["bytes"]) for t in e["top_logprobs"]] == [bytes([i]), bytes([(i + 1) % 256])]
