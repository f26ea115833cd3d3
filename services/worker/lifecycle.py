"""Start-up order of a worker: engine -> serve -> model card -> instance (readiness gate)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from protocol import codec
from protocol.discovery import ModelCard, bootstrap_metadata
from protocol.kv_events import WorkerLoad
from services.worker.args import WorkerConfig
from services.worker.lora import lora_names, serve_lora
from services.worker.roles import role_factory
from shared.engine.base import Engine
from shared.engine.registry import make_engine
from shared.parsers.detect import model_parsers
from shared.runtime.canary import Canary
from shared.runtime.models import publish_card, upload_tokenizer
from shared.runtime.publishers import KvEventPublisher, LoadPublisher
from shared.runtime.server import EndpointServer
from shared.runtime.service import Service
from shared.telemetry.logging import configure_logging
from shared.tokenizer import Tokenizer


def build_engine(cfg: WorkerConfig, tokenizer: Tokenizer) -> Engine:
    """The configured engine; a mock one emits printable text from this model's own vocabulary."""
    eos = min(tokenizer.eos_token_ids) if tokenizer.eos_token_ids else None
    return make_engine(cfg.engine, tokenizer.encode("abcdefghijklmnopqrstuvwxyz "), eos)


async def serve_worker(svc: Service, cfg: WorkerConfig, tokenizer: Tokenizer | None = None) -> None:
    """`tokenizer`: already loaded from cfg.model_path (a simulated fleet loads it once for all)."""
    rt = svc.rt
    shared_tokenizer = tokenizer is not None
    tokenizer = tokenizer or Tokenizer.from_dir(cfg.model_path)
    engine = build_engine(cfg, tokenizer)
    await engine.start()
    if not shared_tokenizer:  # an engine may set Python logging up its own way as it starts (SGLang does): take it back
        configure_logging(cfg.common.log_level, cfg.common.log_json, svc.name)
    events = KvEventPublisher(rt, cfg.component)
    await events.start()
    engine.set_kv_event_sink(events.sink)
    loads = LoadPublisher(rt, cfg.component, lambda: _load(rt.instance_id, engine))
    await loads.start()

    role = await role_factory(cfg, engine)(svc, cfg, engine)
    if engine.accepts_images:
        from services.worker.roles.images import with_images

        role = await with_images(svc, cfg, engine, role)
    server = EndpointServer(rt, cfg.component, cfg.endpoint, role.handler, role.request_type,
                            is_final=role.is_final, request_id_of=role.request_id_of)
    await server.start()
    artifact = await upload_tokenizer(rt, Tokenizer.artifact_files(cfg.model_path))
    tool_parser, reasoning_parser, detected = model_parsers(cfg.tool_call_parser, cfg.reasoning_parser, tokenizer)
    if detected is not None:
        svc.log.info("parsers_detected", family=detected.family or "unknown", tool_call_parser=tool_parser,
                     reasoning_parser=reasoning_parser)
        if detected.warning:
            svc.log.warning("parsers_unknown_template", message=detected.warning)
    card = ModelCard(
        name=cfg.served_model_name, instance_id=rt.instance_id, component=cfg.component,
        endpoint=cfg.endpoint, model_type=model_type(cfg),
        context_length=engine.context_length(),
        kv_block_size=engine.runtime_config().page_size, tokenizer_artifact=artifact,
        engine=cfg.engine.engine, created=int(time.time()),
        runtime=msgspec.structs.replace(engine.runtime_config(), disaggregation_mode=cfg.disaggregation_mode),
        tool_call_parser=tool_parser or "", reasoning_parser=reasoning_parser or "",
        loras=lora_names(engine), **image_card_fields(cfg, tokenizer, engine),
    )
    card_lease = None if cfg.internal else await publish_card(rt, card)  # internal: a processor publishes it

    async def republish() -> None:  # the adapters changed: the card (so the model list) follows
        if card_lease is not None:
            await card_lease.update(codec.encode(msgspec.structs.replace(card, loras=lora_names(engine))))

    lora_server = await serve_lora(rt, cfg.component, engine, republish, cfg.engine.lora, (cfg.served_model_name,))
    svc.set_health(lambda: msgspec.structs.asdict(_load(rt.instance_id, engine)))
    rc = card.runtime
    await server.register(model=cfg.served_model_name,
                          metadata=bootstrap_metadata(rc.bootstrap_host, rc.bootstrap_port))
    svc.set_ready()
    svc.log.info("worker_ready", model=cfg.served_model_name, engine=cfg.engine.engine,
                 instance_id=rt.instance_id)
    canary = None
    if role.canary is not None and cfg.canary.interval > 0:
        canary = Canary(rt, server, role.canary, cfg.canary, svc.set_ready)
        await canary.start()
    try:
        await svc.stopped()
        if canary is not None:
            await canary.stop()
        svc.set_ready(False)
        if card_lease is not None:
            await card_lease.revoke()
        await server.drain(cfg.common.drain_grace)
        if lora_server is not None:
            await lora_server.stop()
    finally:
        if role.stop is not None:
            await role.stop()
        await loads.stop()
        await events.stop()
        await engine.stop()


def image_card_fields(cfg: WorkerConfig, tokenizer: Tokenizer, engine: Engine) -> dict[str, Any]:
    """Model-card fields of a vision-language model (Llava family); none for a text model or an engine
    that takes no images."""
    if not engine.accepts_images or cfg.embedding or cfg.score:
        return {}
    from shared.multimodal.vision import image_token_id, read_llava_config, tokens_per_image

    vcfg = read_llava_config(cfg.model_path)
    if vcfg is None:
        return {}
    return {"input_modalities": ["text", "image"], "image_token": tokenizer.id_to_token(image_token_id(vcfg)) or "",
            "image_tokens": tokens_per_image(vcfg)}


def model_type(cfg: WorkerConfig) -> str:
    """The model card's model_type: what the frontend routes to this worker."""
    return "score" if cfg.score else "embedding" if cfg.embedding else "chat"


def _load(worker_id: str, engine: Engine) -> WorkerLoad:
    ld = engine.load()
    return WorkerLoad(worker_id=worker_id, running=ld.running, waiting=ld.waiting,
                      kv_used_blocks=ld.kv_used_blocks, kv_total_blocks=ld.kv_total_blocks,
                      prefill_tokens=ld.prefill_tokens)
