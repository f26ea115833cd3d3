"""Pairing on SGLang: the decode worker starts its own half and the prefill worker's at once.

The fakes copy SGLang's rule that makes the order matter: the prefill side sends
KV only once the decode side has registered the room, and the decode side
produces tokens only once the KV has arrived. A handler that awaited the
prefill before starting its own request would hang here (as it would on SGLang).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protocol.discovery import InstanceRecord, bootstrap_metadata, bootstrap_of
from protocol.messages import EngineRequest, ErrorCode, OutputChunk, StopConditions
from protocol.transfer import PrefillRequest, PrefillResult
from services.worker.roles.sglang_pair import SglangPairHandler
from shared.errors import TransferFailed
from shared.runtime.errors import RemoteError, WorkerLost
from shared.runtime.server import RequestContext

GOOD, DEAD, PICKY = "a" * 16, "b" * 16, "c" * 16


class Rooms:
    def __init__(self) -> None:
        self.registered: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self.kv_sent: dict[int, asyncio.Event] = defaultdict(asyncio.Event)


class FakeDecodeEngine:
    name = "sglang"

    def __init__(self, rooms: Rooms, tokens: int = 5) -> None:
        self.rooms, self.tokens = rooms, tokens
        self.started: list[int] = []
        self.aborted: list[int] = []

    async def generate(self, req: EngineRequest) -> AsyncIterator[OutputChunk]:
        assert req.bootstrap is not None
        room = req.bootstrap.room
        self.started.append(room)
        finished = False
        try:
            self.rooms.registered[room].set()  # decode registers the room, reserves KV ...
            await self.rooms.kv_sent[room].wait()  # ... and waits for it
            for i in range(self.tokens):
                finished = i == self.tokens - 1
                yield OutputChunk(token_ids=[100 + i], finish_reason="length" if finished else None)
                await asyncio.sleep(0)
        finally:
            if not finished:
                self.aborted.append(room)


class FakePrefillClient:
    def __init__(self, rooms: Rooms, ids: list[str]) -> None:
        self.rooms = rooms
        boot = bootstrap_metadata("10.0.0.1", 8998)
        self.instances = {i: InstanceRecord("ns", "prefill", "generate", i, metadata=boot) for i in ids}
        self.calls: list[tuple[str, PrefillRequest]] = []
        self.cancelled: list[str] = []

    async def generate(self, preq: PrefillRequest, request_id: str, *, instance_id: str, deadline: Any = None,
                       headers: Any = None) -> AsyncIterator[list[PrefillResult]]:
        self.calls.append((instance_id, preq))
        room = preq.request.bootstrap.room  # type: ignore[union-attr]
        try:
            if instance_id == DEAD:
                raise WorkerLost("prefill worker gone", instance_id)
            if instance_id == PICKY:
                raise RemoteError("prompt too long", ErrorCode.CONTEXT_LENGTH)
            await asyncio.wait_for(self.rooms.registered[room].wait(), 2.0)  # SGLang: waits for decode
            self.rooms.kv_sent[room].set()
            yield [PrefillResult(first_token=100, num_tokens=len(preq.request.token_ids))]
        except asyncio.CancelledError:
            self.cancelled.append(instance_id)
            raise


def request() -> EngineRequest:
    return EngineRequest(request_id="r1", token_ids=[1, 2, 3, 4], stop=StopConditions(max_tokens=5))


def ctx() -> RequestContext:
    return RequestContext("r1", "d" * 16, {})


async def collect(handler: SglangPairHandler) -> list[int]:
    out: list[int] = []
    async with contextlib.aclosing(handler(request(), ctx())) as chunks:
        async for c in chunks:
            out.extend(c.token_ids)
    return out


def setup(ids: list[str], tokens: int = 5) -> tuple[SglangPairHandler, FakeDecodeEngine, FakePrefillClient]:
    rooms = Rooms()
    engine, client = FakeDecodeEngine(rooms, tokens), FakePrefillClient(rooms, ids)
    return SglangPairHandler(engine, client), engine, client  # type: ignore[arg-type]


async def test_both_halves_run_at_once_with_one_bootstrap():
    handler, engine, client = setup([GOOD])
    assert await asyncio.wait_for(collect(handler), 5.0) == [100, 101, 102, 103, 104]
    (inst, preq), = client.calls
    boot = preq.request.bootstrap
    assert inst == GOOD and (boot.host, boot.port, boot.instance_id) == ("10.0.0.1", 8998, GOOD)
    assert engine.started == [boot.room] and 0 <= boot.room < 2**63 and preq.dst_block_ids == []
    assert engine.aborted == [] and client.cancelled == []


async def test_a_lost_prefill_worker_aborts_the_decode_half_and_the_pair_is_retried():
    handler, engine, client = setup([DEAD, GOOD])
    handler.picker._rr = iter([1, 0])  # type: ignore[assignment]  # DEAD first (sorted: GOOD, DEAD), then GOOD
    assert await asyncio.wait_for(collect(handler), 5.0) == [100, 101, 102, 103, 104]
    assert [i for i, _ in client.calls] == [DEAD, GOOD]
    first, second = (p.request.bootstrap.room for _, p in client.calls)
    assert first != second and engine.aborted == [first]  # the first room's decode request was freed


async def test_no_prefill_worker_left_ends_with_transfer_failed():
    handler, engine, client = setup([DEAD])
    with pytest.raises(TransferFailed, match="prefill worker gone"):
        await asyncio.wait_for(collect(handler), 5.0)
    assert len(engine.aborted) == 1
    handler, _, _ = setup([])
    with pytest.raises(TransferFailed, match="none available"):
        await collect(handler)
    # an instance without a bootstrap address (not an SGLang prefill worker) is never picked
    handler, _, client = setup([GOOD])
    client.instances[GOOD] = InstanceRecord("ns", "prefill", "generate", GOOD)
    assert bootstrap_of(client.instances[GOOD]) is None
    with pytest.raises(TransferFailed):
        await collect(handler)


async def test_the_prefill_workers_verdict_on_the_request_reaches_the_client():
    handler, engine, client = setup([PICKY, GOOD])
    handler.picker._rr = iter([1, 0])  # type: ignore[assignment]  # PICKY (sorted: GOOD, PICKY)
    with pytest.raises(RemoteError) as e:
        await asyncio.wait_for(collect(handler), 5.0)
    assert e.value.code == ErrorCode.CONTEXT_LENGTH and len(client.calls) == 1 and len(engine.aborted) == 1


async def test_a_client_leaving_aborts_the_decode_half():
    handler, engine, client = setup([GOOD], tokens=50)
    gen = handler(request(), ctx())
    first = await asyncio.wait_for(anext(gen), 5.0)
    assert first.token_ids == [100]
    await gen.aclose()
    assert client.cancelled == [] and len(client.calls) == 1  # the prefill half had finished
    assert engine.aborted == [client.calls[0][1].request.bootstrap.room]
