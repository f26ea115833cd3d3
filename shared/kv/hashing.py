"""The block hash: one definition for engines' KV events and the router.

A block is `page_size` consecutive tokens. Its hash chains on its parent's
hash, so equal hashes mean equal prefixes. Only full blocks are hashed.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

_MASK = (1 << 63) - 1
ROOT_HASH = 0


def block_hash(parent: int | None, tokens: Sequence[int]) -> int:
    """63-bit hash of one block's tokens chained on its parent's hash."""
    h = hashlib.blake2b(digest_size=8)
    h.update((parent or ROOT_HASH).to_bytes(8, "little"))
    h.update(array("q", tokens).tobytes())
    return int.from_bytes(h.digest(), "little") & _MASK


def lora_root(adapter: str) -> int | None:
    """The parent hash of a request's first block: none for the base model, the adapter's own for a
    LoRA adapter (the same prompt under two adapters has different KV, so its blocks never match)."""
    if not adapter:
        return None
    return int.from_bytes(hashlib.blake2b(b"lora:" + adapter.encode(), digest_size=8).digest(), "little") & _MASK


def block_hashes(tokens: Sequence[int], page_size: int, parent: int | None = None) -> list[int]:
    """Chained hashes of every full block of `tokens`."""
    out: list[int] = []
    for start in range(0, len(tokens) - page_size + 1, page_size):
        parent = block_hash(parent, tokens[start : start + page_size])
        out.append(parent)
    return out
