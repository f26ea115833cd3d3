"""The `encode` endpoint: fetch (asyncio, size, time and address limits), preprocess (a bounded pool),
vision tower (its own thread), store in a NIXL slot, answer the reference."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from protocol.multimodal import EncodeRequest, EncodeResult
from services.encode.store import EmbeddingStore
from shared.multimodal.fetch import ImageFetcher, MediaOptions
from shared.multimodal.image import ImageDecoder, ImageSpec, image_hash
from shared.multimodal.vision import VisionTower
from shared.runtime.server import RequestContext
from shared.telemetry.metrics import counter
from shared.telemetry.tracing import extract_context, span

ENCODED = counter("shoal_encode_images_total", "Images encoded")


class EncodeHandler:
    def __init__(self, tower: VisionTower, spec: ImageSpec, store: EmbeddingStore,
                 media: MediaOptions = MediaOptions()) -> None:
        self.tower, self.spec, self.store = tower, spec, store
        self.fetcher, self.decoder = ImageFetcher(media), ImageDecoder(spec, media)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision")

    async def __call__(self, req: EncodeRequest, ctx: RequestContext) -> AsyncIterator[EncodeResult]:
        with span("encode.image", context=extract_context(ctx.headers), attributes={"request_id": req.request_id}):
            data = await self.fetcher.fetch(req.url)
            pixels = (await self.decoder.decode([data]))[0]
            feats = await asyncio.get_running_loop().run_in_executor(self._executor, self.tower.encode, pixels[None])
            ref = await self.store.put(feats[0].cpu())
            ENCODED.inc()
            yield EncodeResult(image_hash(pixels), int(feats.shape[1]), ref)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.decoder.close()
