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
