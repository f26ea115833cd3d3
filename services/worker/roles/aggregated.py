"""The aggregated role: the `generate` handler, an engine request in, output chunks out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from protocol.messages import EngineRequest, OutputChunk, StopConditions
from services.worker.args import WorkerConfig
from services.worker.role import Role
from shared.engine.base import Engine
from shared.runtime.server import RequestContext
from shared.runtime.service import Service
from shared.telemetry.metrics import counter, histogram
from shared.telemetry.tracing import extract_context, span

TOKENS = counter("shoal_worker_tokens_total", "Tokens of the requests this worker served: prompt (as counted at the "
                 "end), cached (prompt tokens found in the KV cache) and output", ["kind"])
_PROMPT, _CACHED, _OUTPUT = (TOKENS.labels(k) for k in ("prompt", "cached", "output"))
HIT_RATIO = histogram("shoal_worker_prefix_cache_hit_ratio", "Share of each finished request's prompt found in the "
                      "prefix (KV) cache", [], buckets=(0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1))


class GenerateHandler:
    """Streams the engine's chunks; after each one, waits `stream_interval` before taking the next.

    Tokens produced meanwhile merge into the next chunk, so a fast engine (or a
    busy worker) sends fewer, larger frames; the first token is never delayed,
    and an engine slower than the interval is never delayed at all.
    """

    def __init__(self, engine: Engine, stream_interval: float = 0.0) -> None:
        self.engine = engine
        self.stream_interval = stream_interval

    async def __call__(self, request: EngineRequest, ctx: RequestContext) -> AsyncIterator[OutputChunk]:
        with span("worker.generate", context=extract_context(ctx.headers),
                  attributes={"request_id": request.request_id, "prompt_tokens": len(request.token_ids)}):
            async with contextlib.aclosing(self.engine.generate(request)) as chunks:
                async for chunk in chunks:
                    _OUTPUT.inc(len(chunk.token_ids))
                    if chunk.usage is not None:
                        _PROMPT.inc(chunk.usage.prompt_tokens)
                        _CACHED.inc(chunk.usage.cached_tokens)
                        if chunk.usage.prompt_tokens:
                            HIT_RATIO.observe(chunk.usage.cached_tokens / chunk.usage.prompt_tokens)
                    yield chunk
                    if self.stream_interval and chunk.finish_reason is None:
                        await asyncio.sleep(self.stream_interval)


async def aggregated_role(svc: Service, cfg: WorkerConfig, engine: Engine) -> Role:
    return Role(GenerateHandler(engine, cfg.stream_interval), EngineRequest,
                is_final=lambda c: c.finish_reason is not None,
                canary=lambda rid: EngineRequest(rid, [1], stop=StopConditions(max_tokens=1, ignore_eos=True)))
