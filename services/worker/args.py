"""The worker's flags: shoal's own few, each defined once; everything else is the engine's (SGLang's)."""

from __future__ import annotations

import argparse

import msgspec

from services.worker.fleet_args import FleetConfig, add_fleet_args, fleet_from_args
from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.model import add_model_args, model_options
from shared.config.yaml_config import expand_or_exit
from shared.engine.registry import EngineOptions, add_engine_args, engine_options
from shared.engine.sglang.argv import SglangArgsError
from shared.engine.sglang.embedding import EMBEDDING_FLAG
from shared.multimodal.fetch import MEDIA_FLAGS, MediaOptions
from shared.parsers.flags import add_parser_args
from shared.routing.options import ROUTER_FLAGS, RouterOptions
from shared.runtime.canary import CanaryConfig, add_canary_args, canary_from_args


class WorkerConfig(msgspec.Struct, frozen=True):
    common: CommonConfig
    engine: EngineOptions
    model_path: str
    served_model_name: str
    component: str = "backend"
    endpoint: str = "generate"
    disaggregation_mode: str = "null"
    stream_interval: float = 0.005
    prefill_component: str = "prefill"
    prefill_router: str = ""
    transfer_timeout: float = 10.0
    disagg_fallback_local: bool = False
    disagg_local_prefill_tokens: int = 0  # decode: prefill locally under this many uncached tokens (0: off)
    prefill_busy: RouterOptions = RouterOptions()  # decode: its busy thresholds judge the prefill workers
    embedding: bool = False  # serve `embed` (an embedding model) instead of `generate`
    score: bool = False  # serve `score` (a cross-encoder: /v1/rerank, /v1/score) instead of `generate`
    internal: bool = False  # publish no model card: clients reach this worker through a processor
    image_slots: int = 64  # vision-language models: image embeddings being read at once (NIXL slots)
    canary: CanaryConfig = CanaryConfig()
    tool_call_parser: str | None = None  # published in the model card; the frontend parses with it
    reasoning_parser: str | None = None
    fleet: FleetConfig = FleetConfig()  # --simulate N: N simulated workers in this process
    media: MediaOptions = MediaOptions()  # images by URL (EPD: this worker fetches them)


_BUSY = ("active_decode_blocks_threshold", "active_prefill_tokens_threshold")
_NOT_BUSY = tuple(f.field for f in ROUTER_FLAGS.flags if f.field not in _BUSY)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.worker",
                                description="shoal worker: serves `generate` with an engine.")
    add_common_args(p, drains=True)
    add_model_args(p)
    g = p.add_argument_group("worker")
    g.add_argument("--component", default=None, help="default: backend (prefill with --disaggregation-mode prefill)")
    g.add_argument("--endpoint", default=None, help="default: generate (embed with --embedding)")
    g.add_argument("--embedding", action="store_true",
                   help=f"serve embeddings (endpoint embed) instead of generation; with --engine sglang "
                        f"this is SGLang's {EMBEDDING_FLAG}, which implies it")
    g.add_argument("--score", action="store_true",
                   help="serve pair scores (endpoint score) with a cross-encoder (*ForSequenceClassification); "
                        f"with --engine sglang this passes SGLang's {EMBEDDING_FLAG}")
    g.add_argument("--disaggregation-mode", choices=("null", "prefill", "decode"), default="null")
    d = p.add_argument_group("disaggregation")
    d.add_argument("--prefill-component", default="prefill", help="decode: where prefill workers serve `generate`")
    d.add_argument("--prefill-router", default="", metavar="COMPONENT",
                   help="decode: ask this router service (python -m services.router --component COMPONENT "
                        "--worker-component prefill) which prefill worker holds the prompt's prefix; "
                        "default: round-robin")
    d.add_argument("--transfer-timeout", type=float, default=10.0, help="seconds a KV transfer may take")
    d.add_argument("--disagg-fallback-local", action="store_true",
                   help="decode: prefill locally when the remote prefill or its transfer fails")
    d.add_argument("--disagg-local-prefill-tokens", type=int, default=0, metavar="N",
                   help="decode: prefill locally when the prompt has fewer than N tokens not in this worker's "
                        "prefix cache (0: off); with a busy threshold below, also when every prefill worker is busy")
    ROUTER_FLAGS.add_to(p, skip=_NOT_BUSY)  # decode: the busy thresholds, applied to the prefill workers
    g.add_argument("--internal", action="store_true",
                   help="publish no model card: the worker serves a processor (python -m services.processor), "
                        "which registers the model (multimodal E/PD and E/P/D)")
    g.add_argument("--image-slots", type=int, default=64,
                   help="vision-language models: image embeddings read over NIXL at once")
    g.add_argument("--stream-interval-ms", type=float, default=5.0,
                   help="least time between a request's frames; tokens made meanwhile share one frame (0: off)")
    add_canary_args(p)
    add_fleet_args(p)
    add_parser_args(g, where="published in the model card: the frontend parses; passed to SGLang too")
    add_engine_args(p)
    MEDIA_FLAGS.add_to(p)
    return p


def parse(argv: list[str]) -> WorkerConfig:
    p = parser()
    argv = expand_or_exit(p, argv)
    ns, extra = p.parse_known_args(argv)
    model = model_options(p, ns, "shoal model make-tiny DIR")
    try:
        opts, embedding = engine_options(ns, model.model_path, extra, argv, ns.embedding or ns.score,
                                         ns.disaggregation_mode)
    except (ValueError, SglangArgsError) as e:
        p.error(str(e))
    embedding = embedding and not ns.score  # a cross-encoder runs as an SGLang embedding model, serving `score`
    if ns.score and (ns.embedding or ns.disaggregation_mode != "null"):
        p.error("--score serves a cross-encoder alone: drop --embedding / --disaggregation-mode")
    if embedding and ns.disaggregation_mode != "null":
        p.error("an embedding worker has no prefill/decode halves: drop --disaggregation-mode")
    component = ns.component or ("prefill" if ns.disaggregation_mode == "prefill" else "backend")
    return WorkerConfig(common=common_from_args(ns), engine=opts, model_path=model.model_path,
                        served_model_name=model.served_model_name, component=component,
                        endpoint=ns.endpoint or ("score" if ns.score else "embed" if embedding else "generate"),
                        embedding=embedding, score=ns.score,
                        disaggregation_mode=ns.disaggregation_mode,
                        stream_interval=ns.stream_interval_ms / 1000, prefill_component=ns.prefill_component,
                        prefill_router=ns.prefill_router,
                        transfer_timeout=ns.transfer_timeout, disagg_fallback_local=ns.disagg_fallback_local,
                        disagg_local_prefill_tokens=ns.disagg_local_prefill_tokens,
                        prefill_busy=ROUTER_FLAGS.build(ns),
                        internal=ns.internal, image_slots=ns.image_slots, canary=canary_from_args(ns),
                        tool_call_parser=ns.tool_call_parser, reasoning_parser=ns.reasoning_parser,
                        fleet=fleet_from_args(ns), media=MEDIA_FLAGS.build(ns))
