"""Cross-encoder scores from `sglang.Engine` (started with `--is-embedding` on a sequence-classification model).

SGLang's own rerank path: an `EmbeddingReqInput` of `[query, document]` text pairs with
`is_cross_encoder_request=True`. SGLang tokenizes the pairs itself (so its BERT models get their segment
ids) and answers each pair's score as that item's `embedding` (a number, or a list of one), after its
classifier's activation (sigmoid for one label). shoal sends the texts the frontend tokenized.
"""

from __future__ import annotations

from typing import Any


async def cross_encode(sgl: Any, texts: list[list[str]], rids: list[str]) -> list[float]:
    """One score per pair, in order."""
    from sglang.srt.managers.io_struct import EmbeddingReqInput

    req = EmbeddingReqInput(text=[list(p) for p in texts], rid=list(rids), is_cross_encoder_request=True)
    result = await sgl.tokenizer_manager.generate_request(req, None).__anext__()
    results = result if isinstance(result, list) else [result]
    return [_score(r["embedding"]) for r in results]


def _score(value: Any) -> float:
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise ValueError(f"a cross-encoder answers one score per pair, not {len(value)} numbers")
        value = value[0]
    return float(value)
