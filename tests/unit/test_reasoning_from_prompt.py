"""A chat template whose generation prompt opens `<think>` (Qwen3-Thinking-2507, GLM-4.7, Kimi K2.6): the model's
output starts inside the reasoning and only closes it. Through the real app and pipeline (fake worker), the
reasoning parser starts in that state: reasoning_content holds what came before `</think>` and content only the
answer, whole and streamed; with a template that does not open it, the same output is all content."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from protocol.discovery import ModelCard
from protocol.messages import OutputChunk, Usage
from services.frontend.app import FrontendApp, FrontendOptions
from services.frontend.dispatch import Dispatcher
from services.frontend.models import ModelEntry
from shared.http import Request, StreamingResponse
from shared.routing.base import RoundRobinRouter
from shared.tokenizer import Tokenizer

OPENS = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
         "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}")
PLAIN = OPENS.replace("<think>\n", "")
OUTPUT = "weigh it\n</think>\n\nthe answer"


class Worker:
    def __init__(self, tok: Tokenizer) -> None:
        self.instances = {"i1": SimpleNamespace(healthy=True)}
        self.ids = tok.encode(OUTPUT, add_special_tokens=False)

    async def generate(self, request: Any, request_id: str, **kw: Any) -> AsyncIterator[list[OutputChunk]]:
        for i, t in enumerate(self.ids):  # one token a frame: the markers arrive split
            last = i == len(self.ids) - 1
            yield [OutputChunk(token_ids=[t], finish_reason="stop" if last else None,
                               usage=Usage(len(request.token_ids), len(self.ids)) if last else None)]


def _app(tiny_model: Path, template: str) -> FrontendApp:
    tok = Tokenizer.from_dir(tiny_model, custom_chat_template=template)
    m = ModelEntry("chat", tok, Worker(tok), RoundRobinRouter())  # type: ignore[arg-type]
    m.cards["i1"] = ModelCard(name="chat", instance_id="i1", component="backend", context_length=512)
    return FrontendApp(SimpleNamespace(models={"chat": m}, serving=lambda: [m]), Dispatcher(),  # type: ignore[arg-type]
                       FrontendOptions(reasoning_parser="qwen3"))


async def _chat(app: FrontendApp, stream: bool) -> tuple[str, str]:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "stream": stream}
    resp = await app(Request("POST", "/v1/chat/completions", "", {"content-type": "application/json"},
                             json.dumps(body).encode(), None))
    assert resp.status == 200, getattr(resp, "body", b"")
    if not isinstance(resp, StreamingResponse):
        msg = json.loads(resp.body)["choices"][0]["message"]
        return msg.get("reasoning_content") or "", msg.get("content") or ""
    raw = b"".join([c async for c in resp.chunks])
    deltas = [json.loads(f[6:])["choices"] for f in raw.split(b"\n\n") if f.startswith(b"data: {")]
    ds = [c[0]["delta"] for c in deltas if c]
    return "".join(d.get("reasoning_content") or "" for d in ds), "".join(d.get("content") or "" for d in ds)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_prompt_that_opens_think_starts_the_parser_inside_the_reasoning(tiny_model: Path,
                                                                               stream: bool) -> None:
    assert await _chat(_app(tiny_model, OPENS), stream) == ("weigh it", "the answer")


async def test_a_prompt_that_does_not_open_it_leaves_the_output_as_content(tiny_model: Path) -> None:
    reasoning, content = await _chat(_app(tiny_model, PLAIN), False)
    assert reasoning == "" and "</think>" in content
