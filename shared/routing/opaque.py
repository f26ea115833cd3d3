"""Prompt parts a KV router cannot see in the workers' events yet, as negative stand-in token ids.

In EPD the frontend sends one image token per image; the LLM worker fetches the
image and expands it to `image_tokens` positions whose ids come from a hash of
its pixels, and those are what its KV events show. The frontend cannot compute
that hash without fetching the image, so for routing it puts a stand-in derived
from the image's URL in the image's place: the same URL, the same stand-in. The
KV router treats negative ids as opaque and also matches such prompts against
where it sent them before (shared.routing.kv_router).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_MASK = (1 << 62) - 1


def stand_in(url: str) -> int:
    """A negative id for an image, the same for the same URL (data: URLs carry the image itself)."""
    digest = hashlib.blake2b(url.encode(), digest_size=8).digest()
    return -1 - (int.from_bytes(digest, "little") & _MASK)


def image_routing_tokens(token_ids: Sequence[int], image_token_id: int, image_tokens: int,
                         urls: Sequence[str]) -> list[int]:
    """`token_ids` with the k-th image token replaced by `image_tokens` copies of the k-th URL's stand-in
    (as many positions as the worker will give the image, so block counts match its KV use)."""
    out: list[int] = []
    k = 0
    for t in token_ids:
        if t == image_token_id and k < len(urls):
            out.extend([stand_in(urls[k])] * max(1, image_tokens))
            k += 1
        else:
            out.append(t)
    return out
