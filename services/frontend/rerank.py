"""POST /v1/rerank (Cohere/Jina shape, as Dynamo and vLLM accept) and /v1/score (vLLM's shape).

Served two ways, chosen by the model:
- a cross-encoder (model_type "score": a `*ForSequenceClassification` model on a score worker): each
  (query, document) pair is tokenized as the tokenizer joins a pair and scored by the model's head
  (sigmoid of its one logit), on the worker (protocol.scoring);
- an embedding model: the cosine similarity of the query's and each document's embeddings (one
  /v1/embeddings-style call; the vectors are L2-normalised, so the score is their dot product, in -1..1).

Rerank answers `results` sorted by relevance (highest first), cut to `top_n`, each with its `index` in
`documents`, its `relevance_score` and (with `return_documents`, default true) the `document`. Score
answers one `score` per pair in `data`: `text_1` a string or a list of one (paired with every `text_2`),
or a list as long as `text_2` (paired item by item). Bad input (an empty query, no documents, more than
--max-rerank-documents of them, wrong types) is a 400 before any worker is asked.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from protocol.embeddings import EmbedRequest, EmbedResponse
from protocol.messages import ErrorCode
from protocol.scoring import ScoreRequest, ScoreResponse
from services.frontend.dispatch import Dispatcher
from services.frontend.embeddings import embedding_inputs
from services.frontend.http_errors import WORKER_HEADER, decode_body, failure_response, json_encoder
from services.frontend.models import ModelEntry, ModelRegistry
from services.frontend.options import DEFAULT_MAX_RERANK_DOCUMENTS
from services.frontend.preprocess import THREAD_TOKENIZE_CHARS
from services.frontend.tokenize_route import model_for
from shared.errors import BadRequest
from shared.http import Request, Response
from shared.runtime.errors import RuntimeFailure
from shared.telemetry.tracing import inject_headers, span
from shared.tokenizer import Tokenizer


class DocumentText(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str


class RerankRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    query: str
    documents: list[str | DocumentText]
    model: str | None = None  # optional when one model is served
    top_n: Annotated[int, Meta(ge=0)] | None = None  # None or 0: every document
    return_documents: bool = True
    user: str | None = None


class ScoreApiRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text_1: str | list[str]
    text_2: str | list[str]
    model: str | None = None
    user: str | None = None


def _texts(docs: list[str | DocumentText]) -> list[str]:
    return [d if isinstance(d, str) else d.text for d in docs]


def score_pairs(text_1: str | list[str], text_2: str | list[str]) -> list[tuple[str, str]]:
    """vLLM's pairing: 1 x N (a string or a list of one, with every text_2), or N x N item by item."""
    left = [text_1] if isinstance(text_1, str) else list(text_1)
    right = [text_2] if isinstance(text_2, str) else list(text_2)
    if not left or not right:
        raise BadRequest("text_1 and text_2 must not be empty lists", "text_1" if not left else "text_2")
    if len(left) == 1:
        return [(left[0], r) for r in right]
    if len(left) != len(right):
        raise BadRequest(f"text_1 has {len(left)} items and text_2 {len(right)}: send one text_1, or as many as "
                         "text_2 (paired item by item)", "text_2")
    return list(zip(left, right, strict=True))


class RerankRoutes:
    """The two routes' logic; FrontendApp registers them and counts them in flight."""

    def __init__(self, registry: ModelRegistry, dispatcher: Dispatcher,
                 max_documents: int = DEFAULT_MAX_RERANK_DOCUMENTS, direct_header: str | None = None) -> None:
        self.registry = registry
        self.dispatcher = dispatcher
        self.max_documents = max_documents
        self.direct_header = direct_header

    async def rerank(self, req: Request) -> Response:
        body = decode_body(req.body, RerankRequest)
        if isinstance(body, Response):
            return body
        try:
            if not body.query.strip():
                raise BadRequest("query must not be empty", "query")
            docs = _texts(body.documents)
            self._check_count(len(docs), "documents")
            target = self._target(req, body.model)
            if isinstance(target, Response):
                return target
            model, instance = target
            scores, tokens, served = await self._scores(model, [(body.query, d) for d in docs], instance)
        except RuntimeFailure as e:
            return failure_response(e)
        order = sorted(range(len(docs)), key=lambda i: -scores[i])[: body.top_n or None]
        results: list[dict[str, Any]] = []
        for i in order:
            item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if body.return_documents:
                item["document"] = {"text": docs[i]}
            results.append(item)
        out = {"id": f"rerank-{secrets.token_hex(12)}", "model": model.name, "results": results,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return Response(200, json_encoder.encode(out), headers=[(WORKER_HEADER, served)])

    async def score(self, req: Request) -> Response:
        body = decode_body(req.body, ScoreApiRequest)
        if isinstance(body, Response):
            return body
        try:
            pairs = score_pairs(body.text_1, body.text_2)
            self._check_count(len(pairs), "text_2")
            target = self._target(req, body.model)
            if isinstance(target, Response):
                return target
            model, instance = target
            scores, tokens, served = await self._scores(model, pairs, instance)
        except RuntimeFailure as e:
            return failure_response(e)
        out = {"id": f"score-{secrets.token_hex(12)}", "object": "list", "created": int(time.time()),
               "model": model.name, "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return Response(200, json_encoder.encode(out), headers=[(WORKER_HEADER, served)])

    # ---- checks -------------------------------------------------------------------------
    def _check_count(self, n: int, param: str) -> None:
        if n == 0:
            raise BadRequest(f"{param} must not be empty", param)
        if n > self.max_documents:
            what = "documents" if param == "documents" else "pairs"
            raise BadRequest(f"{n} {what} to score; this server scores at most {self.max_documents} {what} per "
                             "request (--max-rerank-documents)", param)

    def _target(self, req: Request, name: str | None) -> tuple[ModelEntry, str | None] | Response:
        """The model and the worker named in direct mode; the 404 when there is no such model."""
        model = model_for(self.registry, name)
        if isinstance(model, Response):
            return model
        if not (model.is_scorer or model.is_embedding):
            raise BadRequest(f"The model `{model.name}` is a {model.model_type} model; rerank and score need a "
                             "cross-encoder (served with --score) or an embedding model", "model")
        if not model.candidates():
            raise RuntimeFailure(f"no worker is serving model {model.name!r} right now", ErrorCode.NO_WORKERS)
        instance = None
        if self.direct_header is not None:
            instance = req.headers.get(self.direct_header)
            if not instance:
                raise BadRequest(f"router mode is direct: send the worker in header {self.direct_header}")
        return model, instance

    # ---- scoring ------------------------------------------------------------------------
    async def _scores(self, model: ModelEntry, pairs: list[tuple[str, str]], instance: str | None
                      ) -> tuple[list[float], int, str]:
        """One score per pair, the prompt tokens counted, and the worker that answered."""
        if model.is_scorer:
            return await self._cross_encode(model, pairs, instance)
        return await self._cosine(model, pairs, instance)

    async def _cross_encode(self, model: ModelEntry, pairs: list[tuple[str, str]], instance: str | None
                            ) -> tuple[list[float], int, str]:
        ids, types = await encode_pairs(model.tokenizer, pairs)
        limit = model.context_length
        for i, x in enumerate(ids):
            if len(x) > limit:
                raise BadRequest(f"This model's maximum context length is {limit} tokens, however pair {i} "
                                 f"(query and document) has {len(x)} tokens. Please shorten it.", "documents",
                                 ErrorCode.CONTEXT_LENGTH)
        rid = f"score-{secrets.token_hex(12)}"
        request = ScoreRequest(request_id=rid, inputs=ids, token_type_ids=types if any(any(t) for t in types) else [],
                               texts=[[q, d] for q, d in pairs], model=model.name)
        answer, served = await self._call(model, request, rid, ids[0], instance, len(pairs))
        assert isinstance(answer, ScoreResponse)
        if len(answer.scores) != len(pairs):
            raise RuntimeFailure(f"the worker answered {len(answer.scores)} scores for {len(pairs)} pairs",
                                 ErrorCode.ENGINE_ERROR)
        return list(answer.scores), sum(len(x) for x in ids), served

    async def _cosine(self, model: ModelEntry, pairs: list[tuple[str, str]], instance: str | None
                      ) -> tuple[list[float], int, str]:
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))  # each distinct text embedded once
        if any(not t for t in texts):
            raise BadRequest("an embedding model cannot embed an empty text", "documents")
        inputs = await embedding_inputs(model.tokenizer, texts, model.context_length)
        rid = f"embd-{secrets.token_hex(12)}"
        answer, served = await self._call(model, EmbedRequest(request_id=rid, inputs=inputs, model=model.name),
                                          rid, inputs[0], instance, len(inputs))
        assert isinstance(answer, EmbedResponse)
        if len(answer.embeddings) != len(texts):
            raise RuntimeFailure(f"the worker answered {len(answer.embeddings)} embeddings for {len(texts)} inputs",
                                 ErrorCode.ENGINE_ERROR)
        vec = dict(zip(texts, answer.embeddings, strict=True))
        return [cosine(vec[a], vec[b]) for a, b in pairs], sum(len(x) for x in inputs), served

    async def _call(self, model: ModelEntry, request: msgspec.Struct, rid: str, route: list[int],
                    instance: str | None, items: int) -> tuple[Any, str]:
        """The worker's answer, and which worker gave it."""
        served: dict[str, str] = {}
        with span("frontend.score", attributes={"request_id": rid, "model": model.name, "pairs": items}):
            answer = await self.dispatcher.call(model, request, rid, route, instance, inject_headers({}), served)
        return answer, served.get("instance_id", "")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm > 0 else 0.0


async def encode_pairs(tok: Tokenizer, pairs: list[tuple[str, str]]) -> tuple[list[list[int]], list[list[int]]]:
    """Each pair's token ids and segment ids, joined as the tokenizer's pair template joins them."""
    def run() -> tuple[list[list[int]], list[list[int]]]:
        encodings = tok.backend.encode_batch(pairs, add_special_tokens=True)
        return [list(e.ids) for e in encodings], [list(e.type_ids) for e in encodings]

    if sum(len(q) + len(d) for q, d in pairs) > THREAD_TOKENIZE_CHARS:
        return await asyncio.to_thread(run)
    return run()
