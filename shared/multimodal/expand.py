"""Placeholder expansion: each image token becomes the image's tokens, all carrying its pad value."""

from __future__ import annotations

import msgspec

from protocol.messages import EngineRequest, ErrorCode
from protocol.multimodal import EmbeddingRef, ImageItem, pad_value
from shared.errors import EngineError


def expand_request(request: EngineRequest, image_token_id: int, hashes: list[str], num_tokens: list[int],
                   refs: list[EmbeddingRef] | None = None) -> EngineRequest:
    """The request with image i's one placeholder replaced by `num_tokens[i]` copies of its pad value.

    The first placeholders are the images' (the frontend checked the prompt has exactly one each); a
    migrated request's generated tokens, after them, may hold the image token and stay as they are.
    """
    items = request.multimodal
    places = [i for i, t in enumerate(request.token_ids) if t == image_token_id]
    if len(places) < len(items):
        raise EngineError(ErrorCode.BAD_REQUEST,
                          f"the prompt has {len(places)} image placeholders for {len(items)} images")
    places = places[: len(items)]
    ids: list[int] = []
    out: list[ImageItem] = []
    prev = 0
    for k, (pos, item) in enumerate(zip(places, items, strict=True)):
        ids.extend(request.token_ids[prev:pos])
        pad = pad_value(hashes[k])
        out.append(msgspec.structs.replace(item, offset=len(ids), num_tokens=num_tokens[k], pad_value=pad,
                                           image_hash=hashes[k], embedding=refs[k] if refs else None))
        ids.extend([pad] * num_tokens[k])
        prev = pos + 1
    ids.extend(request.token_ids[prev:])
    return msgspec.structs.replace(request, token_ids=ids, multimodal=out)


def is_expanded(request: EngineRequest) -> bool:
    return all(item.offset >= 0 for item in request.multimodal)
