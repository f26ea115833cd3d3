"""The processor's `generate`: encode every image (encode workers, concurrently), expand each image
token to the image's pad tokens with its embedding reference, forward to the LLM worker the router
picks (by the expanded prompt: KV-aware in `--router-mode kv`), stream back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from protocol.discovery import InstanceRecord
from protocol.messages import EngineRequest, ErrorCode, OutputChunk
from protocol.multimodal import EncodeRequest, EncodeResult
from shared.errors import EngineError
from shared.multimodal.expand import expand_request, is_expanded
from shared.routing.admission import ticket_of
from shared.routing.base import Router
from shared.runtime.client import EndpointClient
from shared.runtime.errors import WorkerLost
from shared.runtime.server import RequestContext
from shared.telemetry.tracing import extract_context, inject_headers, span


class ProcessorHandler:
    def __init__(self, encode: EndpointClient[EncodeResult], worker: EndpointClient[OutputChunk],
                 image_token_id: int, router: Router, max_images: int = 8) -> None:
        self.encode = encode
        self.max_images = max_images
        self.worker = worker
        self.image_token_id = image_token_id
        self.router = router
        worker.add_listener(self._membership)

    def _membership(self, instance_id: str, record: InstanceRecord | None) -> None:
        if record is None:
            self.router.remove_instance(instance_id)
        else:
            self.router.add_instance(instance_id)

    async def __call__(self, request: EngineRequest, ctx: RequestContext) -> AsyncIterator[OutputChunk]:
        with span("processor.generate", context=extract_context(ctx.headers),
                  attributes={"request_id": request.request_id, "images": len(request.multimodal)}):
            if len(request.multimodal) > self.max_images:
                raise EngineError(ErrorCode.BAD_REQUEST, f"{len(request.multimodal)} images in one request; the "
                                  f"limit is {self.max_images} (--max-images-per-request)")
            if request.multimodal and not is_expanded(request):
                results = await asyncio.gather(*(self._encode(f"{request.request_id}:img{i}", item.url, ctx)
                                                 for i, item in enumerate(request.multimodal)))
                request = expand_request(request, self.image_token_id, [r.image_hash for r in results],
                                         [r.num_tokens for r in results], [r.embedding for r in results])
            candidates = self.worker.instance_ids()
            target = (await self.router.admit(request.request_id, request.token_ids, candidates,
                                              session_id=request.routing.session_id,
                                              ticket=ticket_of(request))).instance_id \
                if candidates else None  # none: the client says so (no instances)
            try:
                async with contextlib.aclosing(self.worker.generate(
                        request, request.request_id, instance_id=target, deadline=ctx.deadline,
                        headers=inject_headers({}))) as batches:
                    async for items in batches:
                        for chunk in items:
                            yield chunk
            finally:
                self.router.finished(request.request_id)

    async def _encode(self, key: str, url: str, ctx: RequestContext) -> EncodeResult:
        async with contextlib.aclosing(self.encode.generate(EncodeRequest(key, url), key, deadline=ctx.deadline,
                                                            headers=inject_headers({}))) as batches:
            async for items in batches:
                return items[0]
        raise WorkerLost("the encode worker ended the stream without an answer")
