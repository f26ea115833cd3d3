"""python -m services.processor: clients for encode and LLM workers -> serve `generate` -> model card.

The processor's model card (input_modalities: text, image) is what the frontend
sees: the LLM workers behind it run with `--internal` and publish none.
"""

from __future__ import annotations

import sys
import time

from protocol.discovery import ModelCard
from protocol.messages import EngineRequest, OutputChunk
from protocol.multimodal import EncodeResult
from services.processor.args import parse
from services.processor.handler import ProcessorHandler
from shared.multimodal.vision import image_token_id, tokens_per_image
from shared.runtime.client import EndpointClient
from shared.runtime.models import publish_card, upload_tokenizer
from shared.runtime.server import EndpointServer
from shared.runtime.service import Service, run
from shared.tokenizer import Tokenizer


async def amain(argv: list[str]) -> None:
    from transformers import AutoConfig

    cfg = parse(argv)
    async with Service("processor", cfg.common) as svc:
        rt = svc.rt
        vcfg = AutoConfig.from_pretrained(cfg.model_path)
        tokenizer = Tokenizer.from_dir(cfg.model_path)
        encode: EndpointClient[EncodeResult] = EndpointClient(rt, cfg.encode_component, "encode", EncodeResult)
        worker: EndpointClient[OutputChunk] = EndpointClient(rt, cfg.worker_component, "generate", OutputChunk)
        router = cfg.router.make(runtime=rt, component=cfg.worker_component, page_size=cfg.kv_block_size)
        await router.start()
        await encode.start()
        await worker.start()
        handler = ProcessorHandler(encode, worker, image_token_id(vcfg), router, cfg.max_images_per_request)
        server = EndpointServer(rt, cfg.component, "generate", handler, EngineRequest,
                                is_final=lambda c: c.finish_reason is not None)
        await server.start()
        artifact = await upload_tokenizer(rt, Tokenizer.artifact_files(cfg.model_path))
        context = cfg.context_length or int(vcfg.text_config.max_position_embeddings)
        card = ModelCard(name=cfg.served_model_name, instance_id=rt.instance_id, component=cfg.component,
                         endpoint="generate", model_type="chat", context_length=context,
                         tokenizer_artifact=artifact, engine="processor", created=int(time.time()),
                         input_modalities=["text", "image"],
                         image_token=tokenizer.id_to_token(image_token_id(vcfg)) or "",
                         image_tokens=tokens_per_image(vcfg))
        lease = await publish_card(rt, card)
        await server.register(model=cfg.served_model_name)
        svc.set_ready()
        svc.log.info("processor_ready", model=cfg.served_model_name, encode=cfg.encode_component,
                     workers=cfg.worker_component, router_mode=cfg.router.mode)
        try:
            await svc.stopped()
            svc.set_ready(False)
            await lease.revoke()
            await server.drain(cfg.common.drain_grace)
        finally:
            await worker.stop()
            await encode.stop()
            await router.stop()


def main() -> None:
    run(lambda: amain(sys.argv[1:]))


if __name__ == "__main__":
    main()
