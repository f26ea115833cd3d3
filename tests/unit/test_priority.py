"""Request `priority` (SGLang's field): from the body to the engine request, to SGLang, and the queue order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from protocol.messages import EngineRequest, StopConditions
from services.frontend.fields import check_fields
from services.frontend.openai_types import ChatCompletionRequest
from services.frontend.preprocess import prepare
from shared.engine.mock import MockConfig, MockEngine
from shared.engine.sglang.mapping import generate_kwargs
from shared.tokenizer import Tokenizer


async def test_priority_reaches_the_engine_request_and_sglang(tiny_model: Path) -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "priority": 7}'
    body = msgspec.json.decode(check_fields(raw, ChatCompletionRequest, False), type=ChatCompletionRequest)
    p = await prepare(Tokenizer.from_dir(tiny_model), body, "r", 4096)
    assert p.request.priority == 7
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(p.request), type=EngineRequest)  # crosses NATS
    assert generate_kwargs(wire)["priority"] == 7
    assert "priority" not in generate_kwargs(EngineRequest(request_id="r", token_ids=[1]))  # SGLang's default


async def test_the_mock_engine_schedules_larger_priorities_first_and_equal_ones_in_order() -> None:
    eng = MockEngine(MockConfig(max_running=1, speedup=1000))
    order: list[str] = []

    async def run(rid: str, priority: int | None) -> None:
        req = EngineRequest(request_id=rid, token_ids=[1, 2, 3], stop=StopConditions(max_tokens=2),
                            priority=priority)
        async for _ in eng.generate(req):
            pass
        order.append(rid)

    arrivals = [("low", 1), ("none", None), ("high-a", 10), ("zero", 0), ("high-b", 10), ("negative", -5)]
    tasks = [asyncio.create_task(run(rid, p)) for rid, p in arrivals]
    while eng.load().waiting < len(arrivals):  # all queued before the engine runs: one at a time from here
        await asyncio.sleep(0)
    await eng.start()
    await asyncio.gather(*tasks)
    await eng.stop()
    assert order == ["high-a", "high-b", "low", "none", "zero", "negative"]
