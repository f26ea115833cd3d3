"""A router that starts late or restarts rebuilds its index from the JetStream stream, once."""

from __future__ import annotations

import asyncio

from protocol import codec, subjects
from protocol.kv_events import BlockRemoved, BlockStored, KvEventBatch, WorkerLoad
from shared.cluster.natsd import NatsServer
from shared.config.args import NatsOptions
from shared.kv.hashing import block_hashes
from shared.routing import make_router
from shared.routing.feed import LiveKvRouter
from shared.runtime import Runtime
from shared.runtime.publishers import KvEventPublisher, ensure_kv_stream

PS = 16
NS = "replay"
W1, W2 = "1" * 16, "2" * 16
PROMPTS = [[p * 1000 + i for i in range(8 * PS)] for p in range(4)]


def stored(tokens: list[int]) -> BlockStored:
    return BlockStored(block_hashes=block_hashes(tokens, PS), token_ids=tokens, block_size=PS)


async def publish(rt: Runtime, worker: str, seq: int, *events, component: str = "backend") -> None:
    batch = KvEventBatch(worker_id=worker, seq=seq, events=list(events))
    await rt.js.publish(subjects.kv_events_subject(NS, component, worker), codec.encode(batch))


async def started_router(rt: Runtime) -> LiveKvRouter:
    router = make_router("kv", runtime=rt, component="backend", page_size=PS)
    assert isinstance(router, LiveKvRouter)
    for iid in (W1, W2):
        router.add_instance(iid)
    await router.start()  # returns once the backlog is applied
    return router


async def until(cond, timeout: float = 5.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def overlaps(router: LiveKvRouter, prompt: int) -> dict:
    return router.index.overlaps(block_hashes(PROMPTS[prompt], PS))


async def scenario(url: str) -> None:
    rt = await Runtime.connect(NatsOptions(url=url), NS, "test")
    await ensure_kv_stream(rt)
    await publish(rt, W1, 1, stored(PROMPTS[0]))
    await publish(rt, W1, 2, stored(PROMPTS[1]))
    await publish(rt, W2, 1, stored(PROMPTS[2][: 4 * PS]))
    await publish(rt, W1, 2, BlockRemoved(block_hashes=block_hashes(PROMPTS[1], PS)))  # a resend: skipped
    await publish(rt, W2, 1, stored(PROMPTS[3]), component="prefill")  # another pool: not ours

    late = await started_router(rt)  # starts after the events: replays them
    assert late.batches == {"applied": 3, "duplicate": 1}
    assert overlaps(late, 0) == {(W1, 0): 8} and overlaps(late, 1) == {(W1, 0): 8}
    assert overlaps(late, 2) == {(W2, 0): 4} and overlaps(late, 3) == {}
    assert late.choose("r1", PROMPTS[1] + [7] * 20, [W1, W2]).instance_id == W1

    await publish(rt, W2, 2, stored(PROMPTS[2]))  # live events keep flowing
    await publish(rt, W2, 2, BlockRemoved(block_hashes=block_hashes(PROMPTS[2], PS)))  # duplicate, live
    await until(lambda: late.batches["duplicate"] == 2)
    assert overlaps(late, 2) == {(W2, 0): 8}
    await rt.nc.publish(subjects.load_subject(NS, "backend", W1), codec.encode(WorkerLoad(W1, waiting=3)))
    await until(lambda: W1 in late._reported)
    await late.stop()

    again = await started_router(rt)  # a restart replays everything, applies each batch once
    assert again.batches == {"applied": 4, "duplicate": 2}
    assert {p: overlaps(again, p) for p in range(4)} == {p: overlaps(late, p) for p in range(4)}

    await publish(rt, W1, 9, stored(PROMPTS[3][:PS]))  # seq 3..8 lost: W1's index is stale
    await until(lambda: again.batches["applied"] == 5)
    assert overlaps(again, 0) == {} and overlaps(again, 3) == {(W1, 0): 1}
    await again.stop()
    await rt.close()


def test_router_replays_the_stream_after_restart_and_skips_duplicates(nats_server: NatsServer):
    asyncio.run(scenario(nats_server.url))


async def empty_stream(url: str) -> float:
    rt = await Runtime.connect(NatsOptions(url=url), "fresh", "test")
    t0 = asyncio.get_running_loop().time()
    router = make_router("kv", runtime=rt)
    await router.start()
    took = asyncio.get_running_loop().time() - t0
    await router.stop()
    await rt.close()
    return took


def test_router_on_an_empty_stream_starts_at_once(nats_server: NatsServer):
    assert asyncio.run(empty_stream(nats_server.url)) < 2.0


async def dp_ranks(url: str) -> None:
    rt = await Runtime.connect(NatsOptions(url=url), "dp", "test")
    pub = KvEventPublisher(rt, "backend")
    await pub.start()
    router = make_router("kv", runtime=rt, component="backend", page_size=PS)
    assert isinstance(router, LiveKvRouter)
    router.add_instance(rt.instance_id)
    await router.start()
    try:
        pub.sink([stored(PROMPTS[0][: 2 * PS])])  # rank 0 holds 2 blocks of the prompt
        pub.sink([stored(PROMPTS[0])], dp_rank=1)  # rank 1 all 8: each rank its own cache
        await until(lambda: router.batches["applied"] == 2)
        assert pub.seq == {0: 1, 1: 1}  # one sequence per rank, so neither looks like a gap
        assert router.index.overlaps(block_hashes(PROMPTS[0], PS)) == {(rt.instance_id, 0): 2, (rt.instance_id, 1): 8}
        d = router.choose("r", PROMPTS[0], [rt.instance_id])
        assert (d.overlap_blocks, d.dp_rank) == (8, 1)
    finally:
        await router.stop()
        await pub.stop()
        await rt.close()


def test_dp_ranks_publish_their_own_events_and_the_router_picks_a_rank(nats_server: NatsServer):
    asyncio.run(dp_ranks(nats_server.url))
