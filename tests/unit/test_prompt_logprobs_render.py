"""Completions' echo + logprobs through the pipeline and the completions renderer (real app, fake worker):
the prompt's tokens come first (the first with null logprob and top_logprobs), their text offsets start at 0,
the output's follow the echo, streamed equals whole, and where two alternatives share a text (byte tokens
decode to U+FFFD) the likelier one is kept; a second answer of the prompt's (a migrated continuation) is
not rendered twice."""

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

PROMPT_LP = [None, -1.0, -2.0, -3.0]
OUT = [72, 105]  # "Hi"


class Worker:
    """Answers the prompt's logprobs on its first chunk (as engines do), then `max_tokens` output tokens."""

    def __init__(self) -> None:
        self.instances = {"i1": SimpleNamespace(healthy=True)}
        self.asked: list[int | None] = []

    async def generate(self, request: Any, request_id: str, **kw: Any) -> AsyncIterator[list[OutputChunk]]:
        self.asked.append(request.output.prompt_logprobs)
        n = len(request.token_ids)
        # row 1's alternatives: two byte tokens (both decode to U+FFFD), the likelier second in the row
        tops = [[], [TopLogprob(0x81, -0.25), TopLogprob(0x80, -0.5)]] + [[TopLogprob(65, -0.1)]] * (n - 2)
        first = OutputChunk(token_ids=[], prompt_logprobs=PROMPT_LP[:n], prompt_top_logprobs=tops)
        out = OUT[: request.stop.max_tokens]
        if not out:
            yield [OutputChunk(token_ids=[], prompt_logprobs=first.prompt_logprobs,
                               prompt_top_logprobs=tops, finish_reason="length", usage=Usage(n, 0))]
            return
        yield [first]
        for i, t in enumerate(out):
            last = i == len(out) - 1
            again = PROMPT_LP[:n] if i == 0 else None  # as a migrated request's continuation answers them again
            yield [OutputChunk(token_ids=[t], logprobs=[-0.75], top_logprobs=[[TopLogprob(t, -0.75)]],
                               finish_reason="length" if last else None, usage=Usage(n, len(out)) if last else None,
                               prompt_logprobs=again)]


@pytest.fixture
def setup(tiny_model: Path) -> tuple[FrontendApp, Worker, Tokenizer]:
    tok = Tokenizer.from_dir(tiny_model)
    worker = Worker()
    m = ModelEntry("chat", tok, worker, RoundRobinRouter())  # type: ignore[arg-type]
    m.cards["i1"] = ModelCard(name="chat", instance_id="i1", component="backend", context_length=128)
    app = FrontendApp(SimpleNamespace(models={"chat": m}, serving=lambda: [m]), Dispatcher(),  # type: ignore[arg-type]
                      FrontendOptions())
    return app, worker, tok


async def _post(app: FrontendApp, body: dict[str, Any]) -> dict[str, Any]:
    json_type = {"content-type": "application/json"}
    resp = await app(Request("POST", "/v1/completions", "", json_type, json.dumps(body).encode(), None))
    assert resp.status == 200, getattr(resp, "body", b"")
    if not isinstance(resp, StreamingResponse):
        return json.loads(resp.body)["choices"][0]
    raw = b"".join([c async for c in resp.chunks])
    events = [json.loads(f[6:]) for f in raw.split(b"\n\n") if f.startswith(b"data: {")]
    choices = [e["choices"][0] for e in events if e["choices"]]
    lps = [c["logprobs"] for c in choices if c["logprobs"]]
    return {"text": "".join(c["text"] for c in choices),
            "logprobs": {k: [x for lp in lps for x in lp[k]] for k in ("tokens", "token_logprobs", "top_logprobs",
                                                                         "text_offset")}}


@pytest.mark.parametrize("max_tokens", [0, 2])
async def test_echo_with_logprobs_puts_the_prompts_first(setup: tuple[FrontendApp, Worker, Tokenizer],
                                                         max_tokens: int) -> None:
    app, worker, tok = setup
    ids = [84, 104, 101, 32]  # "The "
    body = {"model": "chat", "prompt": [ids], "echo": True, "logprobs": 2, "max_tokens": max_tokens}
    whole = await _post(app, body)
    streamed = await _post(app, {**body, "stream": True})
    assert worker.asked == [2, 2]  # echo with logprobs asks the engine for the prompt's
    text = tok.decode(ids) + tok.decode(OUT[:max_tokens])
    for choice in (whole, streamed):
        lp = choice["logprobs"]
        assert choice["text"] == text
        assert lp["token_logprobs"] == PROMPT_LP + [-0.75] * max_tokens
        assert lp["tokens"] == [tok.decode([t]) for t in ids + OUT[:max_tokens]]
        assert lp["text_offset"] == list(range(len(ids) + max_tokens))  # one character a token, from 0
        assert lp["top_logprobs"][0] is None
        assert lp["top_logprobs"][1] == {"\ufffd": -0.25}  # the likelier of the two sharing a text
    assert streamed["logprobs"] == whole["logprobs"]
