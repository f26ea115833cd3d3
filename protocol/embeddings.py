"""Embedding requests and responses (endpoint `embed` of an embedding worker).

The frontend tokenizes; the worker gets token ids per input and answers with
one `EmbedResponse` (one vector per input, in order) as the final frame.
"""

from __future__ import annotations

import msgspec

from protocol.messages import PROTOCOL_VERSION

EMBED_ENDPOINT = "embed"


class EmbedRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    request_id: str
    inputs: list[list[int]]  # token ids, one list per input
    model: str = ""
    normalize: bool = True  # L2-normalise each vector
    annotations: dict[str, str] = {}
    v: int = PROTOCOL_VERSION


class EmbedResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    embeddings: list[list[float]]  # one per input, in the request's order
    prompt_tokens: int = 0
