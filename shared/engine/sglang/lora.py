"""LoRA adapters on SGLang: the adapters its flags name, and loading/unloading through its tokenizer manager.

SGLang keeps the adapters (its own batching, `lora_path` per request); shoal
tracks their names for the model card and the frontend's load/unload endpoints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from protocol.messages import ErrorCode
from shared.engine.adapters import AdapterSet
from shared.engine.base import EngineError


def adapters_of(argv: Sequence[str]) -> AdapterSet:
    """The adapters SGLang's own flags load at start (`--lora-paths NAME=PATH | PATH | {json}` ...)."""
    paths: dict[str, str] = {}
    enabled = "--enable-lora" in argv
    i = 0
    while i < len(argv):
        if argv[i] == "--lora-paths":
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                item = argv[i]
                if item.startswith("{"):
                    spec = json.loads(item)
                    paths[spec["lora_name"]] = spec["lora_path"]
                else:
                    name, _, path = item.partition("=") if "=" in item else (item, "", item)
                    paths[name] = path
                i += 1
            continue
        i += 1
    out = AdapterSet(enabled or bool(paths))
    for name, path in paths.items():
        out.added(name, path)
    return out


async def load(tokenizer_manager: Any, adapters: AdapterSet, name: str, path: str) -> None:
    from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput

    adapters.check_new(name)
    _check(await tokenizer_manager.load_lora_adapter(LoadLoRAAdapterReqInput(lora_name=name, lora_path=path), None))
    adapters.added(name, path)


async def unload(tokenizer_manager: Any, adapters: AdapterSet, name: str) -> None:
    """SGLang itself waits for the requests using the adapter; shoal takes none for it meanwhile."""
    from sglang.srt.managers.io_struct import UnloadLoRAAdapterReqInput

    await adapters.drain(name)
    try:
        _check(await tokenizer_manager.unload_lora_adapter(UnloadLoRAAdapterReqInput(lora_name=name), None))
    except EngineError:
        adapters.reopen(name)  # still loaded in SGLang
        raise
    adapters.removed(name)


def _check(result: Any) -> None:
    if not getattr(result, "success", False):
        raise EngineError(ErrorCode.BAD_REQUEST, f"SGLang: {getattr(result, 'error_message', result)}")


def adapter_name_of(tokenizer_manager: Any, lora_id: Any) -> str | None:
    """The name of the adapter SGLang knows by `lora_id` (its registry's uuid hex, or that id's first 64 bits as a
    signed int, the form SGLang gives block hashes in events); None when no loaded adapter has it."""
    registry = getattr(getattr(tokenizer_manager, "lora_registry", None), "_registry", None) or {}
    for name, ref in list(registry.items()):
        ref_id = str(getattr(ref, "lora_id", ""))
        if str(lora_id) == ref_id or (isinstance(lora_id, int) and _as_int64(ref_id) == lora_id):
            return str(name)
    return None


def _as_int64(hex_id: str) -> int | None:
    try:
        value = int(hex_id[:16], 16)
    except ValueError:
        return None
    return value - (1 << 64) if value >= 1 << 63 else value
