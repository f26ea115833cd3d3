"""The `generate` handler: an engine request in, output chunks out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from protocol.messages import EngineRequest, OutputChunk
from shared.engine.base import Engine
from shared.runtime.server import RequestContext
from shared.telemetry.tracing import extract_context, span


class GenerateHandler:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def __call__(self, request: EngineRequest, ctx: RequestContext) -> AsyncIterator[OutputChunk]:
        with span("worker.generate", context=extract_context(ctx.headers),
                  attributes={"request_id": request.request_id, "prompt_tokens": len(request.token_ids)}):
            async with contextlib.aclosing(self.engine.generate(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
