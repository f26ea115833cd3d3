"""The router as its own service: callers other than the frontend get KV-aware choices."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request

from protocol.messages import EngineRequest, OutputChunk, RouteRequest, RouteResponse, StopConditions
from shared.cluster.procs import spawn
from shared.config.args import NatsOptions
from shared.runtime import EndpointClient, Runtime
from shared.runtime.server import EndpointServer


def test_router_service_prefers_the_worker_holding_the_prefix(cluster):
    workers = [cluster.worker("--speedup-ratio", "200", engine="mock", name=f"w{i}") for i in range(3)]
    router = spawn("router", "router", [*cluster.common, "--worker-component", "backend"], cluster.log_dir)
    cluster.procs.append(router)
    router.wait_ready(60)

    async def scenario() -> tuple[set[str], list[str], str]:
        rt = await Runtime.connect(NatsOptions(url=cluster.nats.url), cluster.namespace, "test")
        route: EndpointClient[RouteResponse] = EndpointClient(rt, "router", "route", RouteResponse)
        gen: EndpointClient[OutputChunk] = EndpointClient(rt, "backend", "generate", OutputChunk)
        await route.start()
        await gen.start()
        await route.wait_for_instances(1, 10)
        await gen.wait_for_instances(3, 10)

        async def ask(rid: str, tokens: list[int]) -> str:
            async with contextlib.aclosing(route.generate(RouteRequest(rid, tokens), rid)) as it:
                async for items in it:
                    return items[0].instance_id
            raise AssertionError("no answer")

        prompt = list(range(40, 140))
        first = await ask("r0", prompt)
        req = EngineRequest(request_id="g0", token_ids=prompt, stop=StopConditions(max_tokens=2))
        async with contextlib.aclosing(gen.generate(req, "g0", instance_id=first)) as it:
            async for _ in it:
                pass
        await ask_finished(route, "r0")
        await asyncio.sleep(0.5)  # KV events reach the router through JetStream
        again = []
        for i in range(1, 6):
            again.append(await ask(f"r{i}", prompt))
            await ask_finished(route, f"r{i}")
        live = set(gen.instance_ids())
        for c in (route, gen):
            await c.stop()
        await rt.close()
        return live, again, first

    live, again, first = asyncio.run(scenario())
    assert len(live) == 3 and first in live  # a real choice among three workers
    assert set(again) == {first}
    with urllib.request.urlopen(f"http://127.0.0.1:{router.system_port}/metrics", timeout=5) as r:
        assert b"shoal_router_decisions_total" in r.read()
    assert all(w.alive() for w in workers)


async def ask_finished(route: EndpointClient, rid: str) -> None:
    async with contextlib.aclosing(route.generate(RouteRequest(rid, finished=True), rid + "-done")) as it:
        async for _ in it:
            pass


def test_router_service_queue_admits_by_the_route_requests_priority(cluster):
    """RouteRequest.priority reaches the router service's admission queue: with the only worker busy (queued
    prefill past the threshold), a high-priority request sent after a low one is admitted first."""
    router = spawn("router", "router", [*cluster.common, "--worker-component", "backend",
                                        "--active-prefill-tokens-threshold", "50", "--router-queue-size", "4"],
                   cluster.log_dir)
    cluster.procs.append(router)
    router.wait_ready(60)

    def queued() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{router.system_port}/metrics", timeout=5) as r:
            line = next(x for x in r.read().decode().splitlines() if x.startswith("shoal_router_queue_depth "))
        return float(line.split()[1])

    async def never_called(request: EngineRequest, ctx: object):  # the worker is only routed to, never asked
        yield OutputChunk(token_ids=[], finish_reason="stop")

    async def scenario() -> list[str]:
        rt = await Runtime.connect(NatsOptions(url=cluster.nats.url), cluster.namespace, "test")
        worker = EndpointServer(rt, "backend", "generate", never_called, EngineRequest)  # a live instance
        await worker.start()
        await worker.register()
        route: EndpointClient[RouteResponse] = EndpointClient(rt, "router", "route", RouteResponse)
        await route.start()
        await route.wait_for_instances(1, 10)
        order: list[str] = []

        async def ask(req: RouteRequest) -> None:
            async with contextlib.aclosing(route.generate(req, req.request_id)) as it:
                async for _ in it:
                    order.append(req.request_id)
                    return

        prompt = list(range(3, 103))  # 100 prompt tokens: past the threshold of 50 once sent
        try:
            for attempt in range(3):  # a load report landing between two sends frees the worker: again
                order.clear()
                await ask(RouteRequest(f"first{attempt}", prompt))
                low = asyncio.create_task(ask(RouteRequest(f"low{attempt}", prompt, priority=0, tenant="t")))
                await asyncio.sleep(0.05)
                high = asyncio.create_task(ask(RouteRequest(f"high{attempt}", prompt, priority=5, tenant="t")))
                await asyncio.sleep(0.2)
                both_queued = await asyncio.to_thread(queued) == 2 and order == [f"first{attempt}"]
                for rid in (f"first{attempt}", f"high{attempt}", f"low{attempt}"):  # each ends, the next goes
                    await ask_finished(route, rid)
                    await asyncio.sleep(0.1)
                await asyncio.wait_for(asyncio.gather(low, high), 10)
                if both_queued:
                    return [rid.rstrip("0123456789") for rid in order]
            raise AssertionError("the two requests never both waited in the queue")
        finally:
            await route.stop()
            await worker.drain(1)
            await rt.close()

    assert asyncio.run(scenario()) == ["first", "high", "low"]
