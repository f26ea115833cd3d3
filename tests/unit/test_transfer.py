"""KV transfer over NIXL between two reference engines in one process (two agents, UCX)."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from protocol.messages import EngineRequest, SamplingOptions, StopConditions
from protocol.transfer import abort_tag, done_tag, parse_tag
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.transfer import KvAgent, NotificationInbox, TransferFailed
from shared.transfer.descriptors import block_runs, write_rows
from tests.llama import make_llama


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llama(tmp_path_factory.mktemp("tiny-llama"))


def greedy(rid: str, prompt: list[int], n: int = 12) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=prompt, sampling=SamplingOptions(temperature=0.0),
                         stop=StopConditions(max_tokens=n))


async def started(model_dir: Path) -> tuple[ReferenceEngine, KvAgent]:
    eng = ReferenceEngine(ReferenceConfig(model_path=str(model_dir), num_blocks=256, page_size=4))
    await eng.start()
    agent = KvAgent(f"agent-{random.getrandbits(32):08x}")
    await agent.start(eng.kv_tensors(), eng.bytes_per_block)
    return eng, agent


async def tokens_of(eng: ReferenceEngine, req: EngineRequest) -> list[int]:
    return [t async for c in eng.generate(req) for t in c.token_ids]


def test_runs_merge_only_where_both_sides_are_consecutive() -> None:
    assert block_runs([4, 5, 6, 9], [10, 11, 13, 14]) == [(4, 10, 2), (6, 13, 1), (9, 14, 1)]
    assert block_runs([], []) == []
    with pytest.raises(ValueError):
        block_runs([1], [])


def test_tags_round_trip() -> None:
    assert parse_tag(done_tag(7)) == ("done", 7)
    assert parse_tag(abort_tag(2**61)) == ("abort", 2**61)
    assert parse_tag(b"other") is None


async def test_written_kv_decodes_like_local_prefill(model_dir: Path) -> None:
    (pre, pre_agent), (dec, dec_agent) = await started(model_dir), await started(model_dir)
    inbox = NotificationInbox(dec_agent)
    inbox.start()
    try:
        peer = await pre_agent.add_peer(dec_agent.record)
        rng = random.Random(1)
        prompt = [rng.randrange(3, 300) for _ in range(37)]
        want = await tokens_of(pre, greedy("local", prompt))
        imported = dec.import_kv("a", prompt, 0)
        inbox.expect(5)
        hand = await pre.prefill(greedy("a", prompt))
        await pre_agent.write(peer, hand.block_ids, imported.block_ids, done_tag(5), 5.0)
        await pre.release("a")
        assert await inbox.wait(5, 5.0) == "done"
        imported.first_token, imported.first_logprob = hand.first_token, hand.first_logprob
        assert await tokens_of(dec, greedy("a", prompt)) == want
        assert pre.load().kv_used_blocks == dec.load().kv_used_blocks == 0
    finally:
        await inbox.stop()
        for eng, agent in ((pre, pre_agent), (dec, dec_agent)):
            await agent.stop()
            await eng.stop()


async def test_only_uncached_blocks_move_and_a_bad_peer_fails_cleanly(model_dir: Path) -> None:
    (pre, pre_agent), (dec, dec_agent) = await started(model_dir), await started(model_dir)
    inbox = NotificationInbox(dec_agent)
    inbox.start()
    try:
        peer = await pre_agent.add_peer(dec_agent.record)
        prompt = list(range(3, 40))
        await tokens_of(dec, greedy("cached", prompt[:20]))  # decode caches the prompt's first 5 blocks
        imported = dec.import_kv("b", prompt, 0)
        first = imported.num_cached_tokens // 4
        assert first == 5
        hand = await pre.prefill(greedy("b", prompt))
        inbox.expect(1)
        await pre_agent.write(peer, hand.block_ids[first:], imported.block_ids[first:], done_tag(1), 5.0)
        assert await inbox.wait(1, 5.0) == "done"
        imported.first_token = hand.first_token
        assert await tokens_of(dec, greedy("b", prompt)) == await tokens_of(pre, greedy("ref", prompt))
        bogus = msgspec.structs.replace(peer, layer_addrs=[a + (1 << 40) for a in peer.layer_addrs])
        with pytest.raises(TransferFailed):
            await pre_agent.write(bogus, [0], [0], done_tag(2), 1.0)
        with pytest.raises(ValueError):
            write_rows(pre_agent.record, msgspec.structs.replace(peer, bytes_per_block=1), [0], [0])
        await pre.release("b")
    finally:
        await inbox.stop()
        for eng, agent in ((pre, pre_agent), (dec, dec_agent)):
            await agent.stop()
            await eng.stop()


async def test_inbox_keeps_early_notifications_and_times_out(model_dir: Path) -> None:
    (_, a), (eng, b) = await started(model_dir), await started(model_dir)
    inbox = NotificationInbox(b)
    inbox.start()
    try:
        await a.add_peer(b.record)
        inbox.expect(99)  # polling (as while any write is expected)
        await a.notify(b.name, abort_tag(3))  # for a room nobody expects: filed away
        assert await inbox.wait(99, 0.2) is None  # times out: nothing for room 99
        for _ in range(50):  # on a loaded machine the first message to a peer takes a while: the
            # sender keeps progressing it in the background (no progress thread), nobody else calls it
            if await inbox.wait(99, 0.1) is None and inbox.filed(3):
                break
        assert await inbox.wait(3, 0.01) == "abort"  # filed earlier: answered at once
    finally:
        await inbox.stop()
        await a.stop()
        await b.stop()
        await eng.stop()
