"""The `score` endpoint of a score worker (a cross-encoder): (query, document) pairs in, one score each out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from protocol.messages import ErrorCode
from protocol.scoring import ScoreRequest, ScoreResponse
from services.worker.args import WorkerConfig
from services.worker.role import Role
from shared.engine.base import Engine, EngineError
from shared.engine.capabilities import Scorer
from shared.runtime.server import RequestContext
from shared.runtime.service import Service
from shared.telemetry.tracing import extract_context, span


class ScoreHandler:
    """Runs `engine.score` for one request; answers `overloaded` beyond `max_waiting` requests in flight."""

    def __init__(self, engine: Scorer, max_waiting: int = 1024) -> None:
        self.engine = engine
        self.max_waiting = max_waiting
        self.inflight = 0

    async def __call__(self, request: ScoreRequest, ctx: RequestContext) -> AsyncIterator[ScoreResponse]:
        if self.inflight >= self.max_waiting:
            raise EngineError(ErrorCode.OVERLOADED, "score queue full")
        tokens = sum(len(ids) for ids in request.inputs)
        self.inflight += 1
        try:
            with span("worker.score", context=extract_context(ctx.headers),
                      attributes={"request_id": request.request_id, "pairs": len(request.inputs),
                                  "prompt_tokens": tokens}):
                scores = await self.engine.score(request.inputs, request.token_type_ids, request.texts or None)
        finally:
            self.inflight -= 1
        yield ScoreResponse(scores=scores, prompt_tokens=tokens)


async def score_role(svc: Service, cfg: WorkerConfig, engine: Engine) -> Role:
    if not isinstance(engine, Scorer):
        raise EngineError(ErrorCode.BAD_REQUEST, f"engine {engine.name} does not score pairs: serve a "
                          "cross-encoder (a *ForSequenceClassification model) with the reference or sglang engine")
    return Role(ScoreHandler(engine, cfg.engine.max_waiting), ScoreRequest, is_final=lambda _: True)
