"""Images on an LLM worker serving a vision-language model (reference engine).

Before the engine sees a request with images, `ImageInputs.resolve` gives it one
embedding tensor per image:

- EPD (the request comes straight from the frontend: one image token per image):
  fetch, preprocess and encode here (the engine's own vision tower, in its model
  thread), then expand each image token to the image's pad tokens;
- E/PD, E/P/D (the processor expanded the prompt; each image names its embeddings
  in an encode worker): READ them over NIXL (`shared.multimodal.reader`).

A decode worker of an E/P/D pair needs no embeddings (its prefill worker has them),
but it refuses unexpanded requests: its blocks must match the prefill worker's prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import torch

from protocol.messages import EngineRequest, ErrorCode
from services.worker.args import WorkerConfig
from services.worker.role import Role
from shared.engine.base import Engine, EngineError
from shared.engine.capabilities import ImageEncoder
from shared.multimodal.expand import expand_request, is_expanded
from shared.multimodal.fetch import ImageFetcher, MediaOptions
from shared.multimodal.image import ImageDecoder, ImageSpec, image_hash
from shared.multimodal.reader import EmbeddingReader
from shared.multimodal.vision import image_token_id, tokens_per_image
from shared.runtime.server import RequestContext
from shared.runtime.service import Service


class ImageInputs:
    def __init__(self, engine: ImageEncoder, spec: ImageSpec, reader: EmbeddingReader | None,
                 media: MediaOptions = MediaOptions()) -> None:
        self.engine = engine
        self.spec = spec
        self.reader = reader
        self.media = media
        self.fetcher = ImageFetcher(media)
        self.decoder = ImageDecoder(spec, media)
        cfg = engine.vision_config()
        self.image_token_id = image_token_id(cfg)
        self.num_tokens = tokens_per_image(cfg)

    async def resolve(self, request: EngineRequest) -> tuple[EngineRequest, list[torch.Tensor]]:
        """The request (expanded) and its images' embeddings, in order."""
        items = request.multimodal
        if is_expanded(request):
            if self.reader is None or any(item.embedding is None for item in items):
                raise EngineError(ErrorCode.BAD_REQUEST, "expanded image placeholders without embeddings to read")
            reader = self.reader
            return request, list(await asyncio.gather(*(reader.read(item.embedding) for item in items
                                                        if item.embedding is not None)))
        if any(item.offset >= 0 for item in items):
            raise EngineError(ErrorCode.BAD_REQUEST, "some image placeholders are expanded and some are not")
        if len(items) > self.media.max_images_per_request:
            raise EngineError(ErrorCode.BAD_REQUEST, f"{len(items)} images in one request; the limit is "
                              f"{self.media.max_images_per_request} (--max-images-per-request)")
        datas = await asyncio.gather(*(self.fetcher.fetch(item.url) for item in items))
        pixels = await self.decoder.decode(datas)
        feats = await self.engine.encode_images(torch.stack(pixels))
        hashes = [image_hash(p) for p in pixels]
        expanded = expand_request(request, self.image_token_id, hashes, [self.num_tokens] * len(items))
        return expanded, list(feats)


class ImageHandler:
    """Wraps a role's handler: the request's images are resolved and handed to the engine first."""

    def __init__(self, inner: Any, inputs: ImageInputs, engine: ImageEncoder,
                 get: Callable[[Any], EngineRequest] = lambda r: r,
                 put: Callable[[Any, EngineRequest], Any] = lambda r, e: e) -> None:
        self.inner, self.inputs, self.engine = inner, inputs, engine
        self.get, self.put = get, put

    async def __call__(self, req: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        request = self.get(req)
        if not request.multimodal:
            async with contextlib.aclosing(self.inner(req, ctx)) as items:
                async for item in items:
                    yield item
            return
        resolved, embeds = await self.inputs.resolve(request)
        self.engine.set_image_embeddings(resolved.request_id, embeds)
        try:
            async with contextlib.aclosing(self.inner(self.put(req, resolved), ctx)) as items:
                async for item in items:
                    yield item
        finally:
            self.engine.drop_image_embeddings(resolved.request_id)


class ExpandedOnly:
    """The decode half of E/P/D: requests with images must come expanded from a processor."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, req: EngineRequest, ctx: RequestContext) -> AsyncIterator[Any]:
        if req.multimodal and not is_expanded(req):
            raise EngineError(ErrorCode.BAD_REQUEST, "a disaggregated decode worker takes images only through a "
                              "processor (python -m services.processor)")
        async with contextlib.aclosing(self.inner(req, ctx)) as items:
            async for item in items:
                yield item


async def with_images(svc: Service, cfg: WorkerConfig, engine: Engine, role: Role) -> Role:
    """The role, wrapped for a vision-language model (others unchanged)."""
    if not isinstance(engine, ImageEncoder):  # the engine takes images its own way (SGLang: by URL)
        return role
    if cfg.disaggregation_mode == "decode":
        return _replace(role, ExpandedOnly(role.handler))
    vcfg = engine.vision_config()
    slot_bytes = tokens_per_image(vcfg) * int(vcfg.text_config.hidden_size) * 4
    reader = EmbeddingReader(svc.rt, cfg.image_slots, slot_bytes, cfg.transfer_timeout)
    await reader.start()
    inputs = ImageInputs(engine, ImageSpec.from_dir(cfg.model_path), reader, cfg.media)
    if cfg.disaggregation_mode == "prefill":
        handler = ImageHandler(role.handler, inputs, engine, get=lambda r: r.request,
                               put=lambda r, e: msgspec.structs.replace(r, request=e))
    else:
        handler = ImageHandler(role.handler, inputs, engine)
    inner_stop = role.stop

    async def stop() -> None:
        if inner_stop is not None:
            await inner_stop()
        await reader.stop()
        inputs.decoder.close()

    out = _replace(role, handler)
    out.stop = stop
    return out


def _replace(role: Role, handler: Any) -> Role:
    return Role(handler, role.request_type, role.is_final, role.request_id_of, role.stop)
