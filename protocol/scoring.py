"""Cross-encoder scoring (endpoint `score` of a score worker): /v1/rerank and /v1/score.

The frontend tokenizes each (query, document) pair as the model's tokenizer joins a pair (BERT:
`[CLS] query [SEP] document [SEP]`, segment ids 0 then 1) and sends the ids; it also sends the texts,
for engines that tokenize pairs themselves (SGLang's cross-encoder path). The worker answers one
`ScoreResponse` (one relevance score per pair, in order) as the final frame.
"""

from __future__ import annotations

import msgspec

from protocol.messages import PROTOCOL_VERSION

SCORE_ENDPOINT = "score"


class ScoreRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    request_id: str
    inputs: list[list[int]]  # token ids, one list per pair
    token_type_ids: list[list[int]] = []  # per pair, for models with segment embeddings ([]: none)
    texts: list[list[str]] = []  # the pairs as text ([query, document]), for engines that tokenize
    model: str = ""
    annotations: dict[str, str] = {}
    v: int = PROTOCOL_VERSION


class ScoreResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    scores: list[float]  # one per pair, in the request's order: sigmoid of a one-label head's logit
    prompt_tokens: int = 0
