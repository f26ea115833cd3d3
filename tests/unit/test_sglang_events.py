"""SGLang's ZMQ KV events: wire decoding, re-hashing into shoal's blocks, endpoints, and a real PUB -> SUB loop."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio

from protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored
from shared.cluster.natsd import free_port
from shared.engine.sglang.args import KvEventsSettings
from shared.engine.sglang.events import KvEventSubscriber, ZmqAddress, replay_address, subscriber_address, tcp_url
from shared.engine.sglang.translate import BlockHashTranslator
from shared.engine.sglang.wire import WireBatch, WireCleared, WireRemoved, WireStored, decode_batch, encode_seq
from shared.kv.hashing import block_hashes

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sglang" / "kv_events.bin"


# The publisher's message shapes, as SGLang 0.5.17 declares them (array-like, tagged by class name).
class _Batch(msgspec.Struct, array_like=True):
    ts: float
    events: list[Any]
    attn_dp_rank: int | None = None


class _Event(msgspec.Struct, array_like=True, tag=True):
    pass


class BlockStoredMsg(_Event, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None = None


class BlockRemovedMsg(_Event, tag="BlockRemoved"):
    block_hashes: list[int]
    medium: str | None = None


class AllBlocksClearedMsg(_Event, tag="AllBlocksCleared"):
    pass


def _payload(*events: Any, dp: int | None = 0) -> bytes:
    return msgspec.msgpack.encode(_Batch(ts=1.5, events=list(events), attn_dp_rank=dp))


def _stored(h: int, parent: int | None, tokens: list[int], medium: str | None = "GPU") -> BlockStoredMsg:
    return BlockStoredMsg([h], parent, tokens, len(tokens), None, medium)


PAGE = 4
TOKENS = list(range(100, 112))  # three full pages of 4


def test_decode_sglang_batch() -> None:
    batch = decode_batch(_payload(_stored(-7, None, TOKENS[:4]), BlockRemovedMsg([-7]), AllBlocksClearedMsg(), dp=2))
    assert batch.ts == 1.5 and batch.dp_rank == 2
    assert batch.events == [WireStored([-7], None, TOKENS[:4], 4, "GPU"), WireRemoved([-7], None),
                            WireCleared()]


def test_decode_older_batch_without_medium_or_rank() -> None:
    raw = msgspec.msgpack.encode([2.0, [["BlockStored", [1], None, [1, 2], 2, None], ["BlockRemoved", [1]]]])
    batch = decode_batch(raw)
    assert batch.dp_rank is None
    assert batch.events == [WireStored([1], None, [1, 2], 2, None), WireRemoved([1], None)]


def _chain(translator: BlockHashTranslator, tokens: list[int], sg_hashes: list[int]) -> list[Any]:
    events, parent = [], None
    for i, h in enumerate(sg_hashes):
        events.append(WireStored([h], parent, tokens[i * PAGE : (i + 1) * PAGE], PAGE, "GPU"))
        parent = h
    return translator.translate(events)


def test_stored_chain_is_rehashed_with_shoal_hash_and_merged() -> None:
    tr = BlockHashTranslator(PAGE)
    out = _chain(tr, TOKENS, [901, 902, 903])
    assert out == [BlockStored(block_hashes=block_hashes(TOKENS, PAGE), token_ids=TOKENS, parent_hash=None,
                               block_size=PAGE)]
    more = tr.translate([WireStored([904], 903, [1, 2, 3, 4], PAGE, "GPU")])
    ours = block_hashes([*TOKENS, 1, 2, 3, 4], PAGE)
    assert more == [BlockStored(block_hashes=[ours[3]], token_ids=[1, 2, 3, 4], parent_hash=ours[2],
                                block_size=PAGE)]


def test_removed_blocks_translate_back_to_shoal_hashes() -> None:
    tr = BlockHashTranslator(PAGE)
    _chain(tr, TOKENS, [901, 902, 903])
    ours = block_hashes(TOKENS, PAGE)
    assert tr.translate([WireRemoved([903, 902], "GPU"), WireRemoved([12345])]) == [
        BlockRemoved(block_hashes=[ours[2], ours[1]])]
    assert tr.num_blocks == 1
    assert tr.translate([WireCleared()]) == [AllBlocksCleared()] and tr.num_blocks == 0


def test_unknown_media_partial_pages_and_orphans_are_not_forwarded() -> None:
    tr = BlockHashTranslator(PAGE)
    assert tr.translate([WireStored([1], None, TOKENS[:4], PAGE, "TAPE")]) == []  # a medium shoal does not know
    assert tr.translate([WireStored([2], None, TOKENS[:3], 3, "GPU")]) == []  # partial page
    assert tr.translate([WireStored([3], 999, TOKENS[:4], PAGE, "GPU")]) == []  # parent never seen
    assert tr.translate([WireStored([4], None, [(1, 2, 3)] * 4, PAGE, "GPU")]) == []  # not a token nor a pair
    assert tr.dropped == 4


def test_hicache_tiers_translate_with_their_medium() -> None:
    """HiCache: the tail is backed up to host (parent on GPU), then its GPU copy goes: a host block remains."""
    tr = BlockHashTranslator(PAGE)
    ours = block_hashes(TOKENS, PAGE)
    _chain(tr, TOKENS, [901, 902, 903])
    assert tr.translate([WireStored([903], 902, TOKENS[8:12], PAGE, "CPU_PINNED")]) == [
        BlockStored(block_hashes=[ours[2]], token_ids=TOKENS[8:12], parent_hash=ours[1], block_size=PAGE,
                    medium="host")]
    assert tr.translate([WireRemoved([903], "GPU"), WireStored([903], 902, TOKENS[8:12], PAGE, "DISK")]) == [
        BlockRemoved(block_hashes=[ours[2]]),
        BlockStored(block_hashes=[ours[2]], token_ids=TOKENS[8:12], parent_hash=ours[1], block_size=PAGE,
                    medium="storage")]
    assert tr.translate([WireRemoved([903], "CPU_PINNED")]) == [BlockRemoved(block_hashes=[ours[2]], medium="host")]
    assert tr.num_blocks == 3  # two on GPU, one in storage


def test_two_engine_hashes_for_one_block_are_counted() -> None:
    """Same tokens under two SGLang hashes (e.g. different LoRA keys): removed only when both are gone."""
    tr = BlockHashTranslator(PAGE)
    tr.translate([WireStored([1], None, TOKENS[:4], PAGE), WireStored([2], None, TOKENS[:4], PAGE)])
    assert tr.translate([WireRemoved([1])]) == []
    assert tr.translate([WireRemoved([2])]) == [BlockRemoved(block_hashes=block_hashes(TOKENS[:4], PAGE))]


@pytest.mark.skipif(not FIXTURE.exists(), reason="no captured SGLang event bytes yet (deploy/gpu/prove.sh)")
def test_captured_sglang_events_decode_and_translate() -> None:
    """Real bytes from SGLang 0.5.17 on an H100 (tests/gpu/prove.py adapter): six chat prompts, 16-token pages."""
    frames = msgspec.msgpack.decode(FIXTURE.read_bytes())
    prompts = json.loads(FIXTURE.with_suffix(".json").read_text())["prompts"]
    assert frames, "empty capture"
    tr = BlockHashTranslator(16)
    stored = 0
    for topic, seq, payload in frames:
        assert topic == b"kv" and len(seq) == 8
        for ev in tr.translate(decode_batch(payload).events):
            if isinstance(ev, BlockStored):
                stored += len(ev.block_hashes)
                assert len(ev.token_ids) == 16 * len(ev.block_hashes)
                if ev.parent_hash is None:  # a sequence's first blocks start with a prompt; hashed as the router does
                    assert ev.block_hashes == block_hashes(ev.token_ids, 16)
                    assert any(ev.token_ids[: min(16, len(p))] == p[:16] for p in prompts)
    assert stored >= 20 and tr.dropped == 0


@pytest.mark.parametrize("endpoint, rank, expect", [
    ("tcp://*:5557", 0, ZmqAddress("tcp://127.0.0.1:5557")),
    ("tcp://0.0.0.0:5557", 2, ZmqAddress("tcp://127.0.0.1:5559")),
    ("tcp://[::]:5557", 0, ZmqAddress("tcp://[::1]:5557", ipv6=True)),
    ("tcp://[::1]:5557", 1, ZmqAddress("tcp://[::1]:5558", ipv6=True)),
    ("tcp://10.0.0.5:6000", 0, ZmqAddress("tcp://10.0.0.5:6000", bind=True)),
    ("tcp://[fd00::5]:6000", 0, ZmqAddress("tcp://[fd00::5]:6000", ipv6=True)),  # "::": SGLang binds
    ("tcp://[fd00:1:2:3:4:5:6:7]:6000", 0, ZmqAddress("tcp://[fd00:1:2:3:4:5:6:7]:6000", bind=True, ipv6=True)),
    ("ipc:///tmp/kv", 0, ZmqAddress("ipc:///tmp/kv")),
    ("inproc://kv", 1, ZmqAddress("inproc://kv_dp1")),
])
def test_subscriber_address(endpoint: str, rank: int, expect: ZmqAddress) -> None:
    assert subscriber_address(endpoint, rank) == expect


def test_replay_is_always_dialled_and_ipv6_bracketed() -> None:
    assert replay_address("tcp://10.0.0.5:6001") == ZmqAddress("tcp://10.0.0.5:6001")
    assert tcp_url("::1", 5557) == "tcp://[::1]:5557" and tcp_url("[::1]", 1) == "tcp://[::1]:1"
    assert tcp_url("127.0.0.1", 2) == "tcp://127.0.0.1:2"
    with pytest.raises(ValueError):
        subscriber_address("ipc:///tmp/kv", 1)


async def _publish_until_seen(pub: zmq.asyncio.Socket, topic: bytes, got: list[WireBatch]) -> None:
    """Beat ZMQ's slow joiner: resend batch 0 until the subscriber has it (repeats are ignored)."""
    for _ in range(200):
        await pub.send_multipart([topic, encode_seq(0), _payload(_stored(1, None, TOKENS[:4]))])
        await asyncio.sleep(0.01)
        if got:
            return
    raise AssertionError("subscriber never received")


async def _serve_replay(router: zmq.asyncio.Socket, batches: dict[int, bytes]) -> None:
    ident, _, start = await router.recv_multipart()
    for seq in sorted(batches):
        if seq >= int.from_bytes(start, "big"):
            await router.send_multipart([ident, b"", encode_seq(seq), batches[seq]])
    await router.send_multipart([ident, b"", encode_seq(-1), b""])


async def test_pub_to_sub_loopback_with_replay_of_a_gap() -> None:
    ctx = zmq.asyncio.Context()
    port, replay_port = free_port(), free_port()
    pub = ctx.socket(zmq.PUB)
    pub.bind(f"tcp://*:{port}")
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"tcp://*:{replay_port}")
    got: list[WireBatch] = []
    settings = KvEventsSettings(f"tcp://*:{port}", f"tcp://*:{replay_port}", topic="kv")
    sub = KvEventSubscriber(settings, got.append, ctx=ctx)
    await sub.start()
    try:
        await _publish_until_seen(pub, b"kv", got)
        missed = {1: _payload(_stored(2, 1, TOKENS[4:8])), 2: _payload(BlockRemovedMsg([2]))}
        replay = asyncio.create_task(_serve_replay(router, missed))
        await pub.send_multipart([b"other-topic", encode_seq(9), _payload(AllBlocksClearedMsg())])  # filtered
        await pub.send_multipart([b"kv", encode_seq(3), _payload(AllBlocksClearedMsg())])
        async with asyncio.timeout(5):
            while len(got) < 4:
                await asyncio.sleep(0.01)
        await replay
        kinds = [type(b.events[0]).__name__ for b in got]
        assert kinds == ["WireStored", "WireStored", "WireRemoved", "WireCleared"]
        assert sub.next_seq == 4 and sub.lost == 0
    finally:
        await sub.stop()
        ctx.destroy(linger=0)


async def test_gap_without_replay_is_counted_as_lost() -> None:
    got: list[WireBatch] = []
    sub = KvEventSubscriber(KvEventsSettings("tcp://*:1"), got.append)
    await sub.handle(0, _payload(AllBlocksClearedMsg()))
    await sub.handle(3, _payload(AllBlocksClearedMsg()))
    await sub.handle(2, _payload(AllBlocksClearedMsg()))  # late repeat: ignored
    assert (len(got), sub.lost, sub.next_seq) == (2, 2, 4)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_loopback() -> None:
    ctx = zmq.asyncio.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.IPV6, 1)
    port = pub.bind_to_random_port("tcp://[::1]")
    got: list[WireBatch] = []
    sub = KvEventSubscriber(KvEventsSettings(f"tcp://[::1]:{port}"), got.append, ctx=ctx)
    await sub.start()
    try:
        await _publish_until_seen(pub, b"", got)
    finally:
        await sub.stop()
        ctx.destroy(linger=0)


def _lora_stored(h: int, parent: int | None, tokens: list[Any], lora_id: Any) -> BlockStoredMsg:
    return BlockStoredMsg([h], parent, tokens, len(tokens), lora_id, "GPU")


def test_decode_carries_lora_id_and_eagle_pairs() -> None:
    batch = decode_batch(_payload(_lora_stored(5, None, [[1, 2], [2, 3], [3, 4], [4, 5]], "ab12")))
    assert batch.events == [WireStored([5], None, [[1, 2], [2, 3], [3, 4], [4, 5]], 4, "GPU", "ab12")]


def test_eagle_bigram_blocks_are_hashed_by_their_tokens() -> None:
    """EAGLE's radix keys are (token, next token) pairs: the router still sees the blocks of the tokens."""
    tr = BlockHashTranslator(PAGE)
    pairs = [[t, t + 1] for t in TOKENS]
    events = [WireStored([801], None, pairs[:4], PAGE, "GPU"), WireStored([802], 801, pairs[4:8], PAGE, "GPU")]
    assert tr.translate(events) == [BlockStored(block_hashes=block_hashes(TOKENS[:8], PAGE), token_ids=TOKENS[:8],
                                                block_size=PAGE)]
    assert tr.dropped == 0


def test_an_adapters_blocks_count_for_that_adapter_only() -> None:
    """SGLang's events name the adapter (lora_id); the KV router then finds them for that adapter's requests
    and never for the base model's or another adapter's, and an id no loaded adapter has is not published."""
    from protocol.kv_events import KvEventBatch
    from shared.routing.kv_router import KvRouter

    names = {"1f2e": "alpha"}
    tr = BlockHashTranslator(PAGE, names.get)
    payload = _payload(_lora_stored(11, None, TOKENS[:4], "1f2e"), _lora_stored(12, 11, TOKENS[4:8], None),
                       _lora_stored(13, None, TOKENS[:4], "dead"))
    events = tr.translate(decode_batch(payload).events)
    assert tr.dropped == 1  # the unknown adapter's block
    router = KvRouter(page_size=PAGE)
    for w in ("w1", "w2"):
        router.add_instance(w)
    assert router.apply_batch(KvEventBatch(worker_id="w1", seq=1, events=events))
    prompt = TOKENS[:8]
    assert router.choose("r1", prompt, ["w1", "w2"], lora="alpha").overlap_blocks == 2
    assert router.choose("r2", prompt, ["w1", "w2"]).overlap_blocks == 0
    assert router.choose("r3", prompt, ["w1", "w2"], lora="beta").overlap_blocks == 0
