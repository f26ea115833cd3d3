"""The LoRA flags of every engine, named as SGLang names them; SGLang gets them back unchanged."""

from __future__ import annotations

import argparse

from shared.model.hub import ModelNotFoundError, resolve_model


def add_lora_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LoRA adapters (every engine; SGLang's flags)")
    g.add_argument("--enable-lora", action="store_true", help="serve LoRA adapters (static and loaded at run time)")
    g.add_argument("--lora-paths", nargs="+", default=[], metavar="NAME=PATH",
                   help="adapters loaded at start: peft folders or Hugging Face ids (a bare PATH is named PATH)")
    g.add_argument("--max-loras-per-batch", type=int, default=8, help="distinct adapters running at once")
    g.add_argument("--max-lora-rank", type=int, default=0, help="refuse adapters of a larger rank (0: any)")


def lora_options(ns: argparse.Namespace) -> dict[str, object]:
    """EngineOptions fields from the flags; adapter paths resolved (hub ids through the hub cache)."""
    paths: dict[str, str] = {}
    for item in ns.lora_paths:
        name, _, path = item.partition("=") if "=" in item else (item, "", item)
        try:
            paths[name] = resolve_model(path)
        except ModelNotFoundError as e:
            raise ValueError(f"--lora-paths {item}: {e}") from e
    if paths and not ns.enable_lora:
        ns.enable_lora = True  # as SGLang: adapters given means LoRA on
    return {"enable_lora": ns.enable_lora, "lora_paths": paths, "max_loras_per_batch": ns.max_loras_per_batch,
            "max_lora_rank": ns.max_lora_rank}


def sglang_lora_argv(ns: argparse.Namespace) -> list[str]:
    """The flags as the user gave them, for SGLang's own parser."""
    out = ["--enable-lora"] if ns.enable_lora else []
    out += ["--lora-paths", *ns.lora_paths] if ns.lora_paths else []
    out += ["--max-loras-per-batch", str(ns.max_loras_per_batch)] if ns.enable_lora else []
    out += ["--max-lora-rank", str(ns.max_lora_rank)] if ns.max_lora_rank else []
    return out
