"""The LoRA flags of every engine, named as SGLang names them; SGLang gets them back unchanged."""

from __future__ import annotations

import argparse

import msgspec

from shared.config.flags import FlagGroup, flag
from shared.model.hub import ModelNotFoundError, resolve_model


class LoraOptions(msgspec.Struct, frozen=True):
    enable_lora: bool = False
    lora_paths: list[str] = []  # as given: NAME=PATH or PATH (SGLang gets these back)
    max_loras_per_batch: int = 8
    max_lora_rank: int = 0  # 0: any rank
    adapters: dict[str, str] = {}  # resolved by `lora_options`: name -> local peft folder (hub ids through the cache)
    # run-time loading and unloading (the worker's `lora` endpoint): off unless asked for
    runtime_updates: bool = False
    lora_root: str = ""  # run-time loads name folders under this directory only ("": no local folders)
    allow_hub_download: bool = False  # run-time loads may name a Hugging Face id (downloaded in a thread)
    max_loaded_loras: int = 16  # adapters loaded at once, static ones included (0: no limit)
    max_lora_bytes: int = 1 << 30  # an adapter's files, summed (hub downloads checked before they start)
    lora_load_timeout: float = 120.0  # seconds a run-time load (download, read, checks) may take


LORA_FLAGS = FlagGroup(
    "LoRA adapters (every engine; SGLang's flags)", LoraOptions,
    flag("enable_lora", "--enable-lora", help="serve LoRA adapters (static and loaded at run time)"),
    flag("lora_paths", "--lora-paths", nargs="+", metavar="NAME=PATH",
         help="adapters loaded at start: peft folders or Hugging Face ids (a bare PATH is named PATH)"),
    flag("max_loras_per_batch", "--max-loras-per-batch", help="distinct adapters running at once"),
    flag("max_lora_rank", "--max-lora-rank", help="refuse adapters of a larger rank (0: any up to 256)"),
    flag("runtime_updates", "--enable-lora-runtime-updates",
         help="serve the worker's `lora` endpoint: adapters loaded and unloaded at run time (default: off)"),
    flag("lora_root", "--lora-root", help="run-time loads may name folders under this directory only"),
    flag("allow_hub_download", "--lora-allow-hub-download",
         help="run-time loads may name a Hugging Face id (safetensors and adapter_config.json only)"),
    flag("max_loaded_loras", "--max-loaded-loras", help="adapters loaded at once (0: no limit)"),
    flag("max_lora_bytes", "--max-lora-bytes", help="largest adapter, in bytes of its files"),
    flag("lora_load_timeout", "--lora-load-timeout", help="seconds a run-time load may take"),
)


def lora_options(ns: argparse.Namespace) -> LoraOptions:
    """The LoRA options from the flags, adapter paths resolved; ValueError naming an adapter that cannot be had."""
    opts = LORA_FLAGS.build(ns)
    adapters: dict[str, str] = {}
    for item in opts.lora_paths:
        name, _, path = item.partition("=") if "=" in item else (item, "", item)
        try:
            adapters[name] = resolve_model(path)
        except ModelNotFoundError as e:
            raise ValueError(f"--lora-paths {item}: {e}") from e
    # as SGLang: adapters given means LoRA on
    return msgspec.structs.replace(opts, enable_lora=opts.enable_lora or bool(adapters), adapters=adapters)


def sglang_lora_argv(opts: LoraOptions) -> list[str]:
    """The flags as the user gave them, for SGLang's own parser."""
    out = ["--enable-lora"] if opts.enable_lora else []
    out += ["--lora-paths", *opts.lora_paths] if opts.lora_paths else []
    out += ["--max-loras-per-batch", str(opts.max_loras_per_batch)] if opts.enable_lora else []
    out += ["--max-lora-rank", str(opts.max_lora_rank)] if opts.max_lora_rank else []
    return out
