"""The adapter's request path against a stand-in for `sglang.Engine` (no sglang, no GPU)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from protocol.kv_events import BlockStored, KvEvent
from protocol.messages import BootstrapInfo, EngineRequest, OutputChunk, StopConditions
from shared.engine.base import EngineError
from shared.engine.sglang import SglangEngine
from shared.engine.sglang.args import KvEventsSettings, SglangConfig
from shared.engine.sglang.warmup import warmup_plan
from shared.engine.sglang.wire import WireBatch, WireStored
from shared.kv.hashing import block_hashes


class FakeTokenizerManager:
    def __init__(self) -> None:
        self.aborted: list[str] = []
        self.load_snapshot_reader = SimpleNamespace(read_all=lambda: [SimpleNamespace(
            num_running_reqs=2, num_waiting_reqs=1, num_used_tokens=64, max_total_num_tokens=1600)])

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        self.aborted.append(rid)


class FakeSgl:
    """Streams cumulative output_ids like SGLang without --incremental-streaming-output."""

    def __init__(self, outputs: list[int], hang_after: int | None = None, error: Exception | None = None) -> None:
        self.tokenizer_manager = FakeTokenizerManager()
        self.outputs = outputs
        self.hang_after = hang_after
        self.error = error
        self.calls: list[dict[str, Any]] = []

    async def async_generate(self, **kw: Any) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(kw)
        if self.error is not None:
            raise self.error
        return self._stream(kw)

    async def _stream(self, kw: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        ids: list[int] = []
        for i, tok in enumerate(self.outputs):
            if self.hang_after is not None and i >= self.hang_after:
                await asyncio.Event().wait()
            ids.append(tok)
            done = i == len(self.outputs) - 1
            reason = {"type": "length", "length": len(ids)} if done else None
            yield {"output_ids": ids, "meta_info": {"finish_reason": reason, "prompt_tokens": len(kw["input_ids"]),
                                                    "completion_tokens": len(ids), "cached_tokens": 0}}


def _engine(sgl: FakeSgl, mode: str = "null") -> SglangEngine:
    cfg = SglangConfig(model_path="/m", argv=(), parsed=False, page_size=16, disaggregation_mode=mode,
                       kv_events=KvEventsSettings("ipc:///tmp/x"))
    eng = SglangEngine(cfg)
    eng.sgl = sgl
    return eng


async def _collect(eng: SglangEngine, req: EngineRequest) -> list[OutputChunk]:
    async with contextlib.aclosing(eng.generate(req)) as chunks:
        return [c async for c in chunks]


REQ = EngineRequest(request_id="r1", token_ids=[1, 2, 3], stop=StopConditions(max_tokens=3))


async def test_generate_streams_new_tokens_and_usage() -> None:
    sgl = FakeSgl([7, 8, 9])
    chunks = await _collect(_engine(sgl), REQ)
    assert [c.token_ids for c in chunks] == [[7], [8], [9]]
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3 and chunks[-1].usage.prompt_tokens == 3
    assert sgl.calls[0]["rid"] == "r1" and sgl.calls[0]["sampling_params"]["max_new_tokens"] == 3
    assert sgl.tokenizer_manager.aborted == []


async def test_closing_the_stream_aborts_in_sglang() -> None:
    sgl = FakeSgl([7, 8, 9], hang_after=1)
    eng = _engine(sgl)
    async with contextlib.aclosing(eng.generate(REQ)) as chunks:
        first = await anext(chunks)
    assert first.token_ids == [7]
    assert sgl.tokenizer_manager.aborted == ["r1"]
    assert eng.load().running == 2  # from SGLang's load snapshot, not the adapter's count


async def test_cancelled_consumer_aborts() -> None:
    sgl = FakeSgl([7, 8], hang_after=1)
    eng = _engine(sgl)
    task = asyncio.create_task(_collect(eng, REQ))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sgl.tokenizer_manager.aborted == ["r1"]


async def test_rejection_becomes_engine_error() -> None:
    sgl = FakeSgl([], error=ValueError("The input (9000 tokens) is longer than the model's context length"))
    with pytest.raises(EngineError) as err:
        await _collect(_engine(sgl), REQ)
    assert err.value.code == "context_length_exceeded"


async def test_disaggregated_engines_need_bootstrap_and_pass_it() -> None:
    sgl = FakeSgl([42])
    eng = _engine(sgl, mode="prefill")
    with pytest.raises(EngineError) as err:
        await _collect(eng, REQ)
    assert err.value.code == "bad_request"
    req = EngineRequest(request_id="r2", token_ids=[1, 2], bootstrap=BootstrapInfo("10.0.0.1", 8998, 77))
    handoff = await eng.prefill(req)
    assert (handoff.first_token, handoff.num_tokens, handoff.extra["bootstrap_room"]) == (42, 2, "77")
    kw = sgl.calls[-1]
    assert (kw["bootstrap_host"], kw["bootstrap_port"], kw["bootstrap_room"]) == ("10.0.0.1", 8998, 77)
    with pytest.raises(EngineError):
        await _engine(FakeSgl([1]), mode="decode").prefill(req)


def test_kv_events_reach_the_sink_rehashed_with_their_dp_rank() -> None:
    eng = _engine(FakeSgl([]))
    got: list[tuple[list[KvEvent], int]] = []
    eng.set_kv_event_sink(lambda events, dp_rank=0: got.append((events, dp_rank)))
    from shared.engine.sglang.translate import BlockHashTranslator

    tokens = list(range(16))
    want = [BlockStored(block_hashes=block_hashes(tokens, 16), token_ids=tokens, block_size=16)]
    for rank in (0, 1):
        eng._translators[rank] = BlockHashTranslator(16)
        eng._on_batch_of(rank)(WireBatch(ts=0.0, events=[WireStored([555], None, tokens, 16, "GPU")]))
    assert got == [(want, 0), (want, 1)]  # each rank's cache stays its own


def test_warmup_plan_covers_lengths_batch_and_repeats() -> None:
    plan = warmup_plan(context_length=2048, vocab_size=32000)
    lengths = [len(p) for p in plan.singles]
    assert lengths == sorted(set(lengths)) and lengths[0] == 16 and lengths[-1] == 2048 - plan.max_tokens - 1
    assert len(plan.batch) >= 16 and len({tuple(p) for p in plan.batch}) == len(plan.batch)
    assert sum(len(p) for p in plan.batch) > 8192  # more than one default prefill chunk
    assert all(r in plan.batch[:2] for r in plan.repeats) and len(plan.repeats) >= 2
    ids = {t for p in plan.singles + plan.batch for t in p}
    assert min(ids) >= 32000 // 8 and max(ids) < 32000 // 2  # far from special tokens at either end


async def test_warm_up_runs_the_plan_then_flushes_the_prefix_cache() -> None:
    sgl = FakeSgl([5, 6])
    flushed: list[int] = []

    async def flush_cache() -> None:
        flushed.append(len(sgl.calls))

    sgl.tokenizer_manager.model_config = SimpleNamespace(vocab_size=1000)
    sgl.tokenizer_manager.flush_cache = flush_cache
    engine = _engine(sgl)
    engine._context_length = 4096
    await engine._warm_up()
    plan = warmup_plan(4096, 1000)
    sent = [c["input_ids"] for c in sgl.calls]
    assert sent == plan.singles + plan.batch + plan.repeats
    assert all(c["sampling_params"]["ignore_eos"] for c in sgl.calls)
    assert flushed == [plan.requests()]
