"""The `embed` endpoint of an embedding worker: token ids in, one vector per input out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from protocol.embeddings import EmbedRequest, EmbedResponse
from protocol.messages import ErrorCode
from services.worker.args import WorkerConfig
from services.worker.role import Role
from shared.engine.base import Engine, EngineError
from shared.engine.capabilities import Embedder
from shared.runtime.server import RequestContext
from shared.runtime.service import Service
from shared.telemetry.tracing import extract_context, span


class EmbedHandler:
    """Runs `engine.embed` for one request; answers `overloaded` beyond `max_waiting` requests in flight."""

    def __init__(self, engine: Embedder, max_waiting: int = 1024) -> None:
        self.engine = engine
        self.max_waiting = max_waiting
        self.inflight = 0

    async def __call__(self, request: EmbedRequest, ctx: RequestContext) -> AsyncIterator[EmbedResponse]:
        if self.inflight >= self.max_waiting:
            raise EngineError(ErrorCode.OVERLOADED, "embedding queue full")
        tokens = sum(len(ids) for ids in request.inputs)
        self.inflight += 1
        try:
            with span("worker.embed", context=extract_context(ctx.headers),
                      attributes={"request_id": request.request_id, "inputs": len(request.inputs),
                                  "prompt_tokens": tokens}):
                vectors = await self.engine.embed(request.inputs, request.normalize)
        finally:
            self.inflight -= 1
        yield EmbedResponse(embeddings=vectors, prompt_tokens=tokens)


async def embedding_role(svc: Service, cfg: WorkerConfig, engine: Engine) -> Role:
    if not isinstance(engine, Embedder):
        raise EngineError(ErrorCode.BAD_REQUEST, f"engine {engine.name} does not serve embeddings")
    return Role(EmbedHandler(engine, cfg.engine.max_waiting), EmbedRequest, is_final=lambda _: True)
