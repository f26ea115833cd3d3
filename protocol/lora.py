"""Loading and unloading LoRA adapters at run time (endpoint `lora` of every generating worker).

The frontend sends one `LoraCommand` to each worker of the base model; each
answers one `LoraReply` naming the adapters it serves afterwards (its model card
follows, so the model list does too).
"""

from __future__ import annotations

import msgspec

from protocol.messages import PROTOCOL_VERSION

LORA_ENDPOINT = "lora"


class LoraCommand(msgspec.Struct, frozen=True, omit_defaults=True):
    request_id: str
    action: str  # "load" | "unload"
    lora_name: str
    lora_path: str = ""  # load: a peft folder on the worker's host, or a Hugging Face id
    v: int = PROTOCOL_VERSION


class LoraReply(msgspec.Struct, frozen=True, omit_defaults=True):
    loras: list[str]  # the adapters the worker serves now
    v: int = PROTOCOL_VERSION
