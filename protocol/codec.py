"""Wire encoding: msgpack through msgspec, one encoder/decoder per type."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def decoder(kind: type[T]) -> msgspec.msgpack.Decoder[T]:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.msgpack.Decoder(kind)
    return dec


def decode(data: bytes, kind: type[T]) -> T:
    return decoder(kind).decode(data)


def to_builtins(obj: Any) -> Any:
    """For humans: a struct as plain JSON-able data (the `shoal nats decode` verb)."""
    return msgspec.to_builtins(obj)
