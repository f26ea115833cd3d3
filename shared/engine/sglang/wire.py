"""SGLang's KV-event wire format (the same as vLLM's), decoded without importing sglang.

A ZMQ message is three frames: topic, sequence number (8 bytes, big-endian,
from 0), and a msgpack payload. The payload is an array-like batch

    [ts, [event, ...], attn_dp_rank]

whose events are tagged arrays:

    ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium]
    ["BlockRemoved", block_hashes, medium]
    ["AllBlocksCleared"]

`medium` ("GPU", "CPU_PINNED", "DISK", "EXTERNAL") is absent in older
versions; trailing fields a newer version adds are ignored. `lora_id` names the
adapter whose KV the blocks hold (None: the base model; SGLang 0.5.17 always
sends None). With EAGLE the radix keys are bigrams: `token_ids` holds a
[token, next token] pair per position, kept as sent (translate.py reads the
first of each pair). The replay
socket answers a DEALER's [b"", start_seq] with [b"", seq, payload] frames
and ends with seq -1 and an empty payload.
"""

from __future__ import annotations

from typing import Any

import msgspec

END_OF_REPLAY = -1


class WireStored(msgspec.Struct, frozen=True):
    block_hashes: list[int]
    parent_hash: int | None
    token_ids: list[Any]  # ints; [token, next token] pairs for EAGLE's bigram keys
    block_size: int
    medium: str | None = None
    lora_id: int | str | None = None  # the adapter's id in SGLang; None for the base model


class WireRemoved(msgspec.Struct, frozen=True):
    block_hashes: list[int]
    medium: str | None = None


class WireCleared(msgspec.Struct, frozen=True):
    pass


WireEvent = WireStored | WireRemoved | WireCleared


class WireBatch(msgspec.Struct, frozen=True):
    ts: float
    events: list[WireEvent]
    dp_rank: int | None = None


class WireFormatError(ValueError):
    pass


_decoder = msgspec.msgpack.Decoder()


def decode_seq(frame: bytes) -> int:
    if len(frame) != 8:
        raise WireFormatError(f"sequence frame is {len(frame)} bytes, expected 8")
    return int.from_bytes(frame, "big", signed=True)


def encode_seq(seq: int) -> bytes:
    return seq.to_bytes(8, "big", signed=True)


def decode_batch(payload: bytes) -> WireBatch:
    """One event batch from its msgpack payload."""
    try:
        raw = _decoder.decode(payload)
    except msgspec.DecodeError as e:
        raise WireFormatError(f"payload is not msgpack: {e}") from e
    if not isinstance(raw, list) or len(raw) < 2 or not isinstance(raw[1], list):
        raise WireFormatError(f"payload is not an event batch: {str(raw)[:80]}")
    dp_rank = raw[2] if len(raw) > 2 else None
    return WireBatch(ts=float(raw[0]), events=[_event(e) for e in raw[1]], dp_rank=dp_rank)


def _event(raw: Any) -> WireEvent:
    if not isinstance(raw, list) or not raw:
        raise WireFormatError(f"event is not a tagged array: {str(raw)[:80]}")
    tag, fields = raw[0], raw[1:]
    try:
        if tag == "BlockStored":
            return WireStored(list(fields[0]), fields[1], list(fields[2]), int(fields[3]), _at(fields, 5),
                              _at(fields, 4))
        if tag == "BlockRemoved":
            return WireRemoved(list(fields[0]), _at(fields, 1))
        if tag == "AllBlocksCleared":
            return WireCleared()
    except (IndexError, TypeError, ValueError) as e:
        raise WireFormatError(f"malformed {tag} event: {str(raw)[:80]}") from e
    raise WireFormatError(f"unknown KV event {tag!r}")


def _at(fields: list[Any], i: int) -> Any:
    return fields[i] if len(fields) > i else None
