"""The processor's `generate`: encode every image (encode workers, concurrently), expand each image
token to the image's pad tokens with its embedding reference, forward to an LLM worker, stream back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from protocol.messages import EngineRequest, OutputChunk
from protocol.multimodal import EncodeRequest, EncodeResult
from shared.multimodal.expand import expand_request, is_expanded
from shared.runtime.client import EndpointClient
from shared.runtime.errors import WorkerLost
from shared.runtime.server import RequestContext
from shared.telemetry.tracing import extract_context, inject_headers, span


class ProcessorHandler:
    def __init__(self, encode: EndpointClient[EncodeResult], worker: EndpointClient[OutputChunk],
                 image_token_id: int) -> None:
        self.encode = encode
        self.worker = worker
        self.image_token_id = image_token_id

    async def __call__(self, request: EngineRequest, ctx: RequestContext) -> AsyncIterator[OutputChunk]:
        with span("processor.generate", context=extract_context(ctx.headers),
                  attributes={"request_id": request.request_id, "images": len(request.multimodal)}):
            if request.multimodal and not is_expanded(request):
                results = await asyncio.gather(*(self._encode(f"{request.request_id}:img{i}", item.url, ctx)
                                                 for i, item in enumerate(request.multimodal)))
                request = expand_request(request, self.image_token_id, [r.image_hash for r in results],
                                         [r.num_tokens for r in results], [r.embedding for r in results])
            async with contextlib.aclosing(self.worker.generate(request, request.request_id, deadline=ctx.deadline,
                                                                headers=inject_headers({}))) as batches:
                async for items in batches:
                    for chunk in items:
                        yield chunk

    async def _encode(self, key: str, url: str, ctx: RequestContext) -> EncodeResult:
        async with contextlib.aclosing(self.encode.generate(EncodeRequest(key, url), key, deadline=ctx.deadline,
                                                            headers=inject_headers({}))) as batches:
            async for items in batches:
                return items[0]
        raise WorkerLost("the encode worker ended the stream without an answer")
