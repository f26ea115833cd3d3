"""The encode worker's flags."""

from __future__ import annotations

import argparse

import msgspec

from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.model import add_model_args, model_options
from shared.config.yaml_config import expand_or_exit
from shared.multimodal.fetch import MEDIA_FLAGS, MediaOptions


class EncodeConfig(msgspec.Struct, frozen=True):
    common: CommonConfig
    model_path: str
    component: str = "encode"
    endpoint: str = "encode"
    device: str = "cpu"
    slots: int = 256
    ttl: float = 30.0
    media: MediaOptions = MediaOptions()


def parse(argv: list[str]) -> EncodeConfig:
    p = argparse.ArgumentParser(prog="python -m services.encode",
                                description="shoal encode worker: images -> embeddings, read over NIXL.")
    add_common_args(p, drains=True)
    add_model_args(p, skip=("served_model_name",))  # a Llava model directory: its vision tower and projector
    g = p.add_argument_group("encode")
    g.add_argument("--component", default="encode")
    g.add_argument("--endpoint", default="encode")
    g.add_argument("--device", default="cpu",
                   help="where the vision tower runs (cuda: untested); embeddings wait in host memory (NIXL DRAM)")
    g.add_argument("--embedding-slots", dest="slots", type=int, default=256,
                   help="images whose embeddings can wait to be read at once")
    g.add_argument("--embedding-ttl", dest="ttl", type=float, default=30.0,
                   help="seconds an unread image's embeddings are kept")
    MEDIA_FLAGS.add_to(p)
    ns = p.parse_args(expand_or_exit(p, argv))
    model = model_options(p, ns, "shoal model make-tiny DIR --vision")
    return EncodeConfig(common=common_from_args(ns), model_path=model.model_path, component=ns.component,
                        endpoint=ns.endpoint, device=ns.device, slots=ns.slots, ttl=ns.ttl,
                        media=MEDIA_FLAGS.build(ns))
