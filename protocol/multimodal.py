"""Wire structs of multimodal serving: images on an engine request, the encode endpoint, NIXL tags.

Pure data, no I/O. An `ImageItem` rides on `EngineRequest.multimodal` (one per
image, in prompt order). From the frontend it holds only the URL: the prompt
has one image token per image. The processor (or, in EPD, the LLM worker
itself) expands that token to the image's `num_tokens` copies of `pad_value`
and fills `offset`; in E/PD and E/P/D it also names, in `embedding`, where the
encode worker keeps the image's embeddings for a NIXL READ.
"""

from __future__ import annotations

import msgspec

PAD_BASE = 1 << 30  # pad values live in [2^30, 2^31): never a vocabulary id
RELEASE_PREFIX = "mmfree:"


class EmbeddingRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """An image's embeddings in an encode worker's NIXL-registered memory."""

    agent: str  # the encode worker's NIXL agent (= its instance id; record in the shoal-nixl bucket)
    addr: int
    nbytes: int
    shape: list[int]  # [tokens, hidden]
    dtype: str = "float32"  # float32 | bfloat16 | float16
    handle: int = 0  # freed when a READ carries release_tag(handle), or when its TTL passes
    device_id: int = 0
    mem_type: str = "DRAM"


class ImageItem(msgspec.Struct, frozen=True, omit_defaults=True):
    url: str  # http(s):// or data:image/...;base64,...
    offset: int = -1  # index of its first token in token_ids; -1: not expanded (one image token)
    num_tokens: int = 0
    pad_value: int = 0  # the token id its positions carry: derived from the image's hash
    image_hash: str = ""
    embedding: EmbeddingRef | None = None


class EncodeRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """To an encode worker (component `encode`, endpoint `encode`): fetch, preprocess, encode one image."""

    request_id: str
    url: str


class EncodeResult(msgspec.Struct, frozen=True, omit_defaults=True):
    image_hash: str  # sha256 of the preprocessed pixels
    num_tokens: int
    embedding: EmbeddingRef


def pad_value(image_hash: str) -> int:
    """The token id an image's positions carry (as SGLang's pad values): equal images share it,
    so prefix caching and KV-aware routing see equal prompts, and different images differ."""
    return PAD_BASE + int(image_hash[:15], 16) % PAD_BASE


def release_tag(handle: int) -> bytes:
    """Notification riding on the NIXL READ of an image's embeddings: the encoder may free them."""
    return f"{RELEASE_PREFIX}{handle}".encode()


def parse_release(msg: bytes) -> int | None:
    text = msg.decode(errors="replace")
    if not text.startswith(RELEASE_PREFIX) or not text[len(RELEASE_PREFIX):].isdigit():
        return None
    return int(text[len(RELEASE_PREFIX):])
