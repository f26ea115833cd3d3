"""Images on the SGLang engine: shoal's ImageItems -> SGLang's `image_data` (pure; no sglang import).

- EPD: the request comes from the frontend with one image token per image; SGLang's
  own multimodal processor fetches, preprocesses, encodes and expands:
  `image_data=[url, ...]` beside `input_ids`.
- E/PD: SGLang takes precomputed embeddings as `image_data=[{"format":
  "precomputed_embedding", "feature": tensor[tokens, hidden]}, ...]`, with each image's
  span of `input_ids` holding the model's image token (SGLang pads it itself).
  `precomputed_image_data` builds that; reading the embeddings over NIXL inside an
  SGLang worker is not wired yet, so `image_data_of` refuses expanded requests.
"""

from __future__ import annotations

from typing import Any

from protocol.messages import EngineRequest, ErrorCode
from shared.engine.base import EngineError


def image_data_of(req: EngineRequest) -> list[str] | None:
    """`image_data` for `async_generate` (EPD), or None for a text request."""
    if not req.multimodal:
        return None
    if any(item.offset >= 0 for item in req.multimodal):
        raise EngineError(ErrorCode.BAD_REQUEST, "the sglang engine takes images by URL (EPD); precomputed embeddings "
                          "from an encode worker (E/PD) are not wired yet")
    return [item.url for item in req.multimodal]


def precomputed_image_data(req: EngineRequest, image_token_id: int, features: list[Any]
                           ) -> tuple[list[int], list[dict[str, Any]]]:
    """E/PD on SGLang: `input_ids` with every image position set to the image token, and one
    precomputed-embedding item per image (`features[i]`: `[tokens, hidden]`)."""
    if len(features) != len(req.multimodal):
        raise EngineError(ErrorCode.BAD_REQUEST, f"{len(features)} embeddings for {len(req.multimodal)} images")
    ids = list(req.token_ids)
    items: list[dict[str, Any]] = []
    for item, feat in zip(req.multimodal, features, strict=True):
        if item.offset < 0 or int(feat.shape[0]) != item.num_tokens:
            raise EngineError(ErrorCode.BAD_REQUEST, "image embeddings do not match their placeholder")
        ids[item.offset : item.offset + item.num_tokens] = [image_token_id] * item.num_tokens
        items.append({"format": "precomputed_embedding", "feature": feat})
    return ids, items
