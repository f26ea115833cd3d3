"""The block hash: one definition for engines' KV events and the router.

A block is `page_size` consecutive tokens. Its hash chains on its parent's
hash, so equal hashes mean equal prefixes. Only full blocks are hashed.

The hash is XXH3-64 (the `xxhash` package, as Dynamo's router uses) of the block's
tokens as little-endian int64, seeded with the parent's hash: a 72-block prompt hashes
in tens of microseconds, on the router's decision path.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from xxhash import xxh3_64_intdigest

_MASK = (1 << 63) - 1
ROOT_HASH = 0


def pack_tokens(tokens: Sequence[int]) -> bytes:
    """Token ids as little-endian int64 (what a block's hash reads)."""
    return struct.pack(f"<{len(tokens)}q", *tokens)  # the format is compiled once per length (struct's cache)


def has_negative(packed: bytes) -> bool:
    """Whether any of the packed token ids is negative: the sign bit sits in each int64's last byte."""
    return not packed[7::8].isascii()


def block_hash(parent: int | None, tokens: Sequence[int]) -> int:
    """63-bit hash of one block's tokens chained on its parent's hash."""
    return xxh3_64_intdigest(pack_tokens(tokens), parent or ROOT_HASH) & _MASK


def lora_root(adapter: str) -> int | None:
    """The parent hash of a request's first block: none for the base model, the adapter's own for a
    LoRA adapter (the same prompt under two adapters has different KV, so its blocks never match)."""
    if not adapter:
        return None
    return int.from_bytes(hashlib.blake2b(b"lora:" + adapter.encode(), digest_size=8).digest(), "little") & _MASK


def block_hashes(tokens: Sequence[int], page_size: int, parent: int | None = None) -> list[int]:
    """Chained hashes of every full block of `tokens` (the same as `block_hash` block by block)."""
    return packed_block_hashes(pack_tokens(tokens), page_size, parent)


def packed_block_hashes(packed: bytes, page_size: int, parent: int | None = None) -> list[int]:
    """`block_hashes` of tokens already packed by `pack_tokens` (the whole prompt converted once)."""
    data = memoryview(packed)
    step = page_size * 8
    out: list[int] = []
    h = parent or ROOT_HASH
    for start in range(0, len(data) - step + 1, step):
        h = xxh3_64_intdigest(data[start : start + step], h) & _MASK
        out.append(h)
    return out
