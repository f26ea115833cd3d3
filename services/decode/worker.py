"""Start-up order of a worker: engine -> serve -> model card -> instance (readiness gate)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from protocol import codec
from protocol.discovery import ModelCard, bootstrap_metadata
from protocol.kv_events import WorkerLoad
from protocol.messages import EngineRequest
from services.decode.args import WorkerConfig
from services.decode.handler import GenerateHandler
from services.decode.lora import lora_names, serve_lora
from shared.engine.base import Engine
from shared.engine.registry import make_engine
from shared.runtime.models import publish_card, upload_tokenizer
from shared.runtime.publishers import KvEventPublisher, LoadPublisher
from shared.runtime.server import EndpointServer, Handler
from shared.runtime.service import Service
from shared.telemetry.logging import configure_logging
from shared.tokenizer import Tokenizer


def build_engine(cfg: WorkerConfig, tokenizer: Tokenizer) -> Engine:
    opts = cfg.engine
    if opts.engine == "mock":  # emit printable text from this model's own vocabulary
        ids = tokenizer.encode("abcdefghijklmnopqrstuvwxyz ")
        eos = min(tokenizer.eos_token_ids) if tokenizer.eos_token_ids else None
        opts = msgspec.structs.replace(opts, output_token_ids=ids, eos_token_id=eos)
    return make_engine(opts)


@dataclass
class Role:
    """What a worker serves on its endpoint, and what it stops when it stops."""

    handler: Handler
    request_type: type
    is_final: Callable[[Any], bool]
    request_id_of: Callable[[Any], str] = lambda r: r.request_id
    stop: Callable[[], Awaitable[None]] | None = None


RoleFactory = Callable[[Service, WorkerConfig, Engine], Awaitable[Role]]


async def aggregated_role(svc: Service, cfg: WorkerConfig, engine: Engine) -> Role:
    return Role(GenerateHandler(engine, cfg.stream_interval), EngineRequest,
                is_final=lambda c: c.finish_reason is not None)


def role_factory(cfg: WorkerConfig) -> RoleFactory:
    """Disaggregation on the reference engine is shoal's (NIXL); SGLang moves its KV itself."""
    if cfg.embedding:
        from services.decode.embed import embedding_role

        return embedding_role
    if cfg.disaggregation_mode == "null":
        return aggregated_role
    if cfg.disaggregation_mode == "decode":
        if cfg.engine.engine == "sglang":
            from services.decode.sglang_pair import sglang_decode_role

            return sglang_decode_role
        from services.decode.disagg import decode_role

        return decode_role
    from services.prefill.handler import prefill_role

    return prefill_role


async def serve_worker(svc: Service, cfg: WorkerConfig, make_role: RoleFactory | None = None) -> None:
    rt = svc.rt
    tokenizer = Tokenizer.from_dir(cfg.model_path)
    engine = build_engine(cfg, tokenizer)
    await engine.start()
    if cfg.engine.engine == "sglang":  # SGLang reconfigures Python logging as it starts: take it back
        configure_logging(cfg.common.log_level, cfg.common.log_json, svc.name)
    events = KvEventPublisher(rt, cfg.component)
    await events.start()
    engine.set_kv_event_sink(events.sink)
    loads = LoadPublisher(rt, cfg.component, lambda: _load(rt.instance_id, engine))
    await loads.start()

    role = await (make_role or role_factory(cfg))(svc, cfg, engine)
    if getattr(engine, "is_multimodal", False):
        from services.decode.multimodal import with_images

        role = await with_images(svc, cfg, engine, role)
    server = EndpointServer(rt, cfg.component, cfg.endpoint, role.handler, role.request_type,
                            is_final=role.is_final, request_id_of=role.request_id_of)
    await server.start()
    artifact = await upload_tokenizer(rt, Tokenizer.artifact_files(cfg.model_path))
    card = ModelCard(
        name=cfg.served_model_name, instance_id=rt.instance_id, component=cfg.component,
        endpoint=cfg.endpoint, model_type="embedding" if cfg.embedding else "chat",
        context_length=engine.context_length(),
        kv_block_size=engine.runtime_config().page_size, tokenizer_artifact=artifact,
        engine=cfg.engine.engine, created=int(time.time()),
        runtime=msgspec.structs.replace(engine.runtime_config(), disaggregation_mode=cfg.disaggregation_mode),
        loras=lora_names(engine), **image_card_fields(cfg, tokenizer),
    )
    card_lease = None if cfg.internal else await publish_card(rt, card)  # internal: a processor publishes it

    async def republish() -> None:  # the adapters changed: the card (so the model list) follows
        if card_lease is not None:
            await card_lease.update(codec.encode(msgspec.structs.replace(card, loras=lora_names(engine))))

    lora_server = await serve_lora(rt, cfg.component, engine, republish)
    svc.set_health(lambda: msgspec.structs.asdict(_load(rt.instance_id, engine)))
    rc = card.runtime
    await server.register(model=cfg.served_model_name,
                          metadata=bootstrap_metadata(rc.bootstrap_host, rc.bootstrap_port))
    svc.set_ready()
    svc.log.info("worker_ready", model=cfg.served_model_name, engine=cfg.engine.engine,
                 instance_id=rt.instance_id)
    try:
        await svc.stopped()
        svc.set_ready(False)
        if card_lease is not None:
            await card_lease.revoke()
        await server.drain(cfg.drain_grace)
        if lora_server is not None:
            await lora_server.stop()
    finally:
        if role.stop is not None:
            await role.stop()
        await loads.stop()
        await events.stop()
        await engine.stop()


def image_card_fields(cfg: WorkerConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """Model-card fields of a vision-language model (Llava family; none for a text model or the mock engine)."""
    if cfg.engine.engine == "mock" or cfg.embedding:
        return {}
    from shared.multimodal.vision import image_token_id, read_llava_config, tokens_per_image

    vcfg = read_llava_config(cfg.model_path)
    if vcfg is None:
        return {}
    return {"input_modalities": ["text", "image"], "image_token": tokenizer.id_to_token(image_token_id(vcfg)) or "",
            "image_tokens": tokens_per_image(vcfg)}


def _load(worker_id: str, engine: Engine) -> WorkerLoad:
    ld = engine.load()
    return WorkerLoad(worker_id=worker_id, running=ld.running, waiting=ld.waiting,
                      kv_used_blocks=ld.kv_used_blocks, kv_total_blocks=ld.kv_total_blocks)
