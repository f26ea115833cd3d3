"""serve/client over a real nats-server: streaming, cancel, deadline, discovery, lost workers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import msgspec
import pytest

from protocol.messages import ErrorCode
from shared.config.args import NatsOptions
from shared.errors import EngineError, TransferFailed
from shared.runtime import EndpointClient, EndpointServer, RemoteError, Runtime, WorkerLost
from shared.runtime.errors import NatsUnavailable
from shared.runtime.server import RequestContext


class Ask(msgspec.Struct):
    request_id: str
    n: int
    delay: float = 0.0
    fail: bool = False


class Part(msgspec.Struct):
    i: int


async def counting(req: Ask, ctx: RequestContext) -> AsyncIterator[Part]:
    for i in range(req.n):
        if req.delay:
            await asyncio.sleep(req.delay)
        yield Part(i)
    if req.fail:
        raise ValueError("boom")


async def rt_for(nats_server, ttl: float = 1.5) -> Runtime:
    return await Runtime.connect(NatsOptions(url=nats_server.url), "t", "test", lease_ttl=ttl)


@contextlib.asynccontextmanager
async def served(nats_server, handler=counting, server_kw=None, client_kw=None):
    """A registered server and a started client on two connections; torn down afterwards."""
    srv_rt, cli_rt = await rt_for(nats_server), await rt_for(nats_server)
    server = EndpointServer(srv_rt, "backend", "generate", handler, Ask, **(server_kw or {}))
    await server.start()
    await server.register()
    client = EndpointClient(cli_rt, "backend", "generate", Part, **(client_kw or {}))
    await client.start()
    await client.wait_for_instances(1, 5)
    try:
        yield server, client
    finally:
        await client.stop()
        await server.stop()
        await srv_rt.close()
        await cli_rt.close()


async def collect(client: EndpointClient, req: Ask, **kw) -> list[int]:
    out: list[int] = []
    async with contextlib.aclosing(client.generate(req, req.request_id, **kw)) as it:
        async for items in it:
            out.extend(p.i for p in items)
    return out


async def test_stream_roundtrip_and_errors(nats_server):
    async with served(nats_server) as (server, client):
        assert await collect(client, Ask("a", 50)) == list(range(50))
        assert await collect(client, Ask("b", 3), instance_id=server.instance_id) == [0, 1, 2]
        with pytest.raises(RemoteError) as e:
            await collect(client, Ask("c", 2, fail=True))
        assert e.value.code == ErrorCode.INTERNAL and "boom" in e.value.message


@pytest.mark.parametrize("error", [EngineError(ErrorCode.OVERLOADED, "queue full", retry_after=2.0),
                                   TransferFailed("KV never arrived")], ids=["engine", "transfer"])
async def test_a_handler_error_of_the_family_reaches_the_client_with_its_code(nats_server, error):
    async def failing(req: Ask, ctx: RequestContext) -> AsyncIterator[Part]:
        yield Part(0)
        raise error

    async with served(nats_server, failing) as (_, client):
        with pytest.raises(RemoteError) as e:
            await collect(client, Ask("f", 1))
    assert (e.value.code, e.value.message, e.value.retry_after) == (error.code, error.message, error.retry_after)


async def test_cancel_reaches_the_handler(nats_server):
    cancelled = asyncio.Event()

    async def slow(req: Ask, ctx: RequestContext) -> AsyncIterator[Part]:
        try:
            for i in range(1000):
                await asyncio.sleep(0.01)
                yield Part(i)
        finally:
            cancelled.set()

    async with served(nats_server, slow) as (server, client):
        async with contextlib.aclosing(client.generate(Ask("x", 0), "x")) as it:
            await anext(it)
        t0 = time.monotonic()
        await asyncio.wait_for(cancelled.wait(), 2)
        assert time.monotonic() - t0 < 1.0  # the worker stops at once (its handler had ~10 s left), on a loaded box too
        assert not server.inflight


async def test_deadline_times_out(nats_server):
    async with served(nats_server) as (_, client):
        with pytest.raises(RemoteError) as e:
            await collect(client, Ask("d", 100, delay=0.05), deadline=time.time() + 0.3)
        assert e.value.code == ErrorCode.TIMEOUT


async def test_discovery_sees_instances_come_and_go(nats_server):
    cli_rt = await rt_for(nats_server)
    client = EndpointClient(cli_rt, "backend", "generate", Part)
    await client.start()
    srv_rt = await rt_for(nats_server, ttl=1.5)
    server = EndpointServer(srv_rt, "backend", "generate", counting, Ask)
    await server.start()
    t0 = time.monotonic()
    await server.register()
    await client.wait_for_instances(1, 2)
    assert time.monotonic() - t0 < 2
    # a process that dies stops its heartbeat and lease refresh, and deletes nothing
    await server._lease.abandon()
    t0 = time.monotonic()
    while client.instances and time.monotonic() - t0 < 6:
        await asyncio.sleep(0.1)
    assert not client.instances, "lease did not expire"
    assert time.monotonic() - t0 < 5
    await client.stop()
    await server.stop()
    await srv_rt.close()
    await cli_rt.close()


async def test_silent_worker_is_lost(nats_server):
    async with served(nats_server, server_kw={"keepalive": 10}, client_kw={"keepalive_timeout": 0.5}) as (_, c):
        with pytest.raises(WorkerLost):
            await collect(c, Ask("s", 3, delay=1.0))


async def test_nats_down_is_a_clear_error():
    from shared.cluster.natsd import free_port

    with pytest.raises(NatsUnavailable, match="cannot reach NATS"):
        await Runtime.connect(NatsOptions(url=f"nats://127.0.0.1:{free_port()}"), "t", "test")
