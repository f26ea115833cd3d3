"""The processor's flags."""

from __future__ import annotations

import argparse

import msgspec

from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.yaml_config import expand_or_exit
from shared.model.hub import add_model_args, resolve_model_args


class ProcessorConfig(msgspec.Struct, frozen=True):
    common: CommonConfig
    model_path: str
    served_model_name: str
    component: str = "processor"
    encode_component: str = "encode"
    worker_component: str = "backend"
    context_length: int = 0
    drain_grace: float = 30.0
    router_mode: str = "round-robin"  # which LLM worker: round-robin | random | kv
    kv_block_size: int = 16
    kv_overlap_weight: float = 4.0


def parse(argv: list[str]) -> ProcessorConfig:
    p = argparse.ArgumentParser(prog="python -m services.processor",
                                description="shoal multimodal processor: images -> encode workers -> LLM workers.")
    add_common_args(p)
    g = p.add_argument_group("processor")
    add_model_args(g)  # a Llava model: its tokenizer, image token, tokens per image
    g.add_argument("--component", default="processor", help="this service's component (in the model card)")
    g.add_argument("--encode-component", default="encode", help="where encode workers serve `encode`")
    g.add_argument("--worker-component", default="backend",
                   help="where the LLM workers (started with --internal) serve `generate`")
    g.add_argument("--context-length", type=int, default=0, help="default: the model's max_position_embeddings")
    g.add_argument("--drain-grace", type=float, default=30.0)
    g.add_argument("--router-mode", choices=("round-robin", "random", "kv"), default="round-robin",
                   help="how the LLM worker is chosen; kv: the worker caching the longest prefix of the expanded "
                        "prompt (image pad ids come from the image's hash, so two images never share blocks)")
    g.add_argument("--kv-block-size", type=int, default=16,
                   help="kv mode: the LLM workers' KV page size (their --page-size)")
    g.add_argument("--kv-overlap-score-weight", dest="kv_overlap_weight", type=float, default=4.0,
                   help="kv mode: cost of one uncached prompt block relative to one active block of load")
    ns = p.parse_args(expand_or_exit(p, argv))
    model_path, name = resolve_model_args(p, ns, "make one with: shoal model make-tiny DIR --vision")
    return ProcessorConfig(common=common_from_args(ns), model_path=model_path, served_model_name=name,
                           component=ns.component, encode_component=ns.encode_component,
                           worker_component=ns.worker_component, context_length=ns.context_length,
                           drain_grace=ns.drain_grace, router_mode=ns.router_mode,
                           kv_block_size=ns.kv_block_size, kv_overlap_weight=ns.kv_overlap_weight)
