"""python -m services.frontend: parse args -> models from discovery -> HTTP."""

from __future__ import annotations

import gc
import sys

from protocol.discovery import ModelCard
from services.frontend.app import FrontendApp, FrontendOptions
from services.frontend.args import FrontendConfig, parse
from services.frontend.cold_start import ColdStart
from services.frontend.dispatch import Dispatcher
from services.frontend.limits import RequestLimits
from services.frontend.models import ModelRegistry
from services.frontend.stats import StatsPublisher
from shared.grammar import pool as grammar_pool
from shared.http import Handler, HttpServer
from shared.http.cors import Cors, CorsPolicy
from shared.routing.base import Router
from shared.runtime.service import Service, run


async def amain(argv: list[str]) -> None:
    cfg = parse(argv)
    grammar_pool.configure(cfg.grammar_compile_timeout)
    async with Service("frontend", cfg.common) as svc:
        registry = ModelRegistry(svc.rt, lambda name, card: _router(cfg, svc, card), cfg.custom_jinja_template,
                                 cfg.worker_silence_timeout)
        await registry.start()
        stats = StatsPublisher(svc.rt)
        await stats.start()
        dispatcher = Dispatcher(cfg.migration_limit, cfg.request_timeout, cfg.max_inflight)
        app = FrontendApp(registry, dispatcher, FrontendOptions(
            api_key=cfg.api_key, max_prompt_tokens=cfg.max_prompt_tokens,
            router_mode=cfg.router.mode, ignore_unknown_fields=cfg.ignore_unknown_fields,
            tool_call_parser=cfg.tool_call_parser, reasoning_parser=cfg.reasoning_parser, limits=RequestLimits(
                cfg.max_prompt_bytes, cfg.max_grammar_bytes, cfg.max_json_depth, cfg.allow_client_priority,
                cfg.allowed_hosts, cfg.protect_metrics),
            max_rerank_documents=cfg.max_rerank_documents, lora_admin=cfg.lora_admin,
            session_from=cfg.router.session_from, tenant_header=cfg.router.tenant_header))
        cold = app.pipeline.cold_start = ColdStart(svc.rt, registry, cfg.cold_start)  # scale from zero
        await cold.start()
        handler: Handler = app
        if cfg.cors_allowed_origins:
            handler = Cors(app, CorsPolicy(cfg.cors_allowed_origins, cfg.cors_allowed_methods,
                                           cfg.cors_allowed_headers))
        http = HttpServer(handler, cfg.http_host, cfg.http_port, max_body_bytes=cfg.max_body_bytes,
                          header_timeout=cfg.header_timeout, max_connections=cfg.max_connections,
                          body_timeout=cfg.body_timeout)
        port = await http.start()
        gc.freeze()  # what startup made (modules, classes, ...) lives on: out of every full collection's scan
        svc.set_ready()
        svc.log.info("frontend_ready", url=f"http://{cfg.http_host}:{port}", router_mode=cfg.router.mode)
        await svc.stopped()
        svc.set_ready(False)
        await http.stop(cfg.common.drain_grace)
        await stats.stop()
        await cold.stop()
        await registry.stop()


def _router(cfg: FrontendConfig, svc: Service, card: ModelCard) -> Router:
    return cfg.router.make(runtime=svc.rt, component=card.component, page_size=card.kv_block_size)


def main() -> None:
    run(lambda: amain(sys.argv[1:]))


if __name__ == "__main__":
    main()
