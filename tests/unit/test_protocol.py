"""Every wire struct survives an encode/decode round trip; subjects are well-formed."""

from __future__ import annotations

import msgspec
import pytest

from protocol import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    BootstrapInfo,
    Cancel,
    EngineRequest,
    ErrorCode,
    ErrorInfo,
    InstanceRecord,
    KvEventBatch,
    ModelCard,
    OutputChunk,
    RuntimeConfig,
    SamplingOptions,
    StopConditions,
    StreamFrame,
    TopLogprob,
    Usage,
    WorkerLoad,
    codec,
    subjects,
)

SAMPLES = [
    EngineRequest(request_id="r1", token_ids=[1, 2, 3], model="m",
                  sampling=SamplingOptions(temperature=0.0, seed=7),
                  stop=StopConditions(max_tokens=9, stop=["\n"], stop_token_ids=[2]),
                  bootstrap=BootstrapInfo(host="127.0.0.1", port=9, room=42), annotations={"a": "b"}),
    OutputChunk(token_ids=[5, 6], logprobs=[-0.1, -0.2], top_logprobs=[[TopLogprob(5, -0.1)], []],
                finish_reason="length", usage=Usage(3, 2, 1)),
    ErrorInfo(code=ErrorCode.OVERLOADED, message="full", retry_after=1.0),
    Cancel(request_id="r1"),
    InstanceRecord(namespace="ns", component="backend", endpoint="generate", instance_id="00ff", pid=3),
    ModelCard(name="tiny", instance_id="00ff", component="backend",
              runtime=RuntimeConfig(total_kv_blocks=100, page_size=16, max_running_requests=8)),
    KvEventBatch(worker_id="w", seq=3, events=[
        BlockStored(block_hashes=[1, 2], token_ids=list(range(32)), parent_hash=9),
        BlockRemoved(block_hashes=[1]), AllBlocksCleared()]),
    WorkerLoad(worker_id="w", running=2, waiting=1, kv_used_blocks=5, kv_total_blocks=10),
]


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_roundtrip(obj: msgspec.Struct) -> None:
    assert codec.decode(codec.encode(obj), type(obj)) == obj


def test_frame_carries_raw_items_without_reencoding() -> None:
    chunk = OutputChunk(token_ids=[1])
    frame = StreamFrame(seq=4, items=[msgspec.Raw(codec.encode(chunk))], final=False)
    back = codec.decode(codec.encode(frame), StreamFrame)
    assert back.seq == 4 and codec.decode(back.items[0], OutputChunk) == chunk


def test_bad_bytes_are_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        codec.decode(b"\xc1", EngineRequest)
    with pytest.raises(msgspec.ValidationError):
        codec.decode(codec.encode({"request_id": 3}), EngineRequest)


def test_subjects_follow_the_naming_ladder() -> None:
    assert subjects.endpoint_subject("ns", "backend", "generate") == "shoal.ns.backend.generate"
    assert subjects.instance_subject("ns", "backend", "generate", "ab") == "shoal.ns.backend.generate.ab"
    assert subjects.kv_events_subject("ns", "backend", "ab").startswith("shoal.ns.kv.")
    with pytest.raises(ValueError, match="must match"):
        subjects.check_token("a.b", "component")
