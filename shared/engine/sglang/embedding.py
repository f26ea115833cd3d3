"""Embeddings from `sglang.Engine` started with SGLang's `--is-embedding`.

shoal tokenizes in the frontend, so the engine gets token ids. SGLang's
`Engine.async_encode` takes them (`input_ids=`) where its signature has that
parameter; otherwise the request is built as `async_encode` builds it, an
`EmbeddingReqInput` with `input_ids`, and handed to the tokenizer manager.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from shared.engine.sglang.argv import has_flag

EMBEDDING_FLAG = "--is-embedding"


def is_embedding(argv: list[str] | tuple[str, ...]) -> bool:
    """Whether SGLang's command line starts an embedding model (`--is-embedding`, spelled in full)."""
    return has_flag(argv, (EMBEDDING_FLAG,))


async def encode(sgl: Any, inputs: list[list[int]], rids: list[str]) -> list[list[float]]:
    """One vector per input, in order, as SGLang's pooler made it."""
    single = len(inputs) == 1  # a single request, not a batch of one
    ids: Any = inputs[0] if single else inputs
    rid: Any = rids[0] if single else rids
    params = _parameters(sgl.async_encode)
    if "input_ids" in params:
        kw: dict[str, Any] = {"input_ids": ids}
        if "rid" in params:
            kw["rid"] = rid
        result = await sgl.async_encode(**kw)
    else:
        from sglang.srt.managers.io_struct import EmbeddingReqInput

        gen = sgl.tokenizer_manager.generate_request(EmbeddingReqInput(input_ids=ids, rid=rid), None)
        result = await gen.__anext__()
    results = result if isinstance(result, list) else [result]
    return [[float(x) for x in r["embedding"]] for r in results]


def l2_normalize(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vec))
    return [x / norm for x in vec] if norm > 0 else vec


def _parameters(fn: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return frozenset()
