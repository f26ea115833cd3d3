"""The processor's flags."""

from __future__ import annotations

import argparse

import msgspec

from protocol.discovery import DEFAULT_PAGE_SIZE
from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.model import add_model_args, model_options
from shared.config.yaml_config import expand_or_exit
from shared.multimodal.fetch import MEDIA_FLAGS, MediaOptions
from shared.routing.options import ROUTER_FLAGS, RouterOptions


class ProcessorConfig(msgspec.Struct, frozen=True):
    common: CommonConfig
    model_path: str
    served_model_name: str
    component: str = "processor"
    encode_component: str = "encode"
    worker_component: str = "backend"
    context_length: int = 0
    router: RouterOptions = RouterOptions()  # which LLM worker
    kv_block_size: int = DEFAULT_PAGE_SIZE
    max_images_per_request: int = MediaOptions().max_images_per_request


def parse(argv: list[str]) -> ProcessorConfig:
    p = argparse.ArgumentParser(prog="python -m services.processor",
                                description="shoal multimodal processor: images -> encode workers -> LLM workers.")
    add_common_args(p, drains=True)
    add_model_args(p)  # a Llava model directory: its tokenizer, image token, tokens per image
    g = p.add_argument_group("processor")
    g.add_argument("--component", default="processor", help="this service's component (in the model card)")
    g.add_argument("--encode-component", default="encode", help="where encode workers serve `encode`")
    g.add_argument("--worker-component", default="backend",
                   help="where the LLM workers (started with --internal) serve `generate`")
    g.add_argument("--context-length", type=int, default=0, help="default: the model's max_position_embeddings")
    g.add_argument("--kv-block-size", type=int, default=DEFAULT_PAGE_SIZE,
                   help="kv mode: the LLM workers' KV page size (their --page-size); image pad ids come from the "
                        "image's hash, so two images never share blocks")
    ROUTER_FLAGS.add_to(p)
    MEDIA_FLAGS.add_to(p, skip=[f for f in msgspec.structs.asdict(MediaOptions()) if f != "max_images_per_request"])
    ns = p.parse_args(expand_or_exit(p, argv))
    router = ROUTER_FLAGS.build(ns)
    if router.mode == "direct":
        p.error("--router-mode direct is the frontend's (a request header names the worker)")
    model = model_options(p, ns, "shoal model make-tiny DIR --vision")
    return ProcessorConfig(common=common_from_args(ns), model_path=model.model_path,
                           served_model_name=model.served_model_name,
                           component=ns.component, encode_component=ns.encode_component,
                           worker_component=ns.worker_component, context_length=ns.context_length,
                           router=router, kv_block_size=ns.kv_block_size,
                           max_images_per_request=MEDIA_FLAGS.build(ns).max_images_per_request)
