"""`shoal watch` turns wire msgpack (frames with nested items too) into readable JSON."""

import msgspec

from protocol import codec
from protocol.kv_events import BlockStored, KvEventBatch
from protocol.messages import OutputChunk, StreamFrame
from shared.cluster.watch import decode_message


def test_kv_batch_and_stream_frame_become_plain_data():
    batch = KvEventBatch(worker_id="w1", seq=2, events=[BlockStored(block_hashes=[7], token_ids=[1] * 16)])
    out = decode_message(codec.encode(batch))
    assert out["worker_id"] == "w1" and out["events"][0]["type"] == "stored"
    frame = StreamFrame(seq=3, items=[msgspec.Raw(codec.encode(OutputChunk(token_ids=[5, 6])))])
    decoded = decode_message(codec.encode(frame))
    assert decoded[0] == 3 and decoded[1][0] == {"token_ids": [5, 6]}
    assert decode_message(b"plain text") == "plain text"
