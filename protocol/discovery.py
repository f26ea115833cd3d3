"""Discovery records: instances and model cards kept in JetStream KV."""

from __future__ import annotations

import msgspec

from protocol.messages import PROTOCOL_VERSION


class InstanceRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    namespace: str
    component: str
    endpoint: str
    instance_id: str
    host: str = ""
    pid: int = 0
    started_at: float = 0.0
    model: str = ""
    metadata: dict[str, str] = {}
    healthy: bool = True  # False while the instance's canary fails: clients route elsewhere
    v: int = PROTOCOL_VERSION


class Heartbeat(msgspec.Struct, frozen=True, omit_defaults=True):
    """Liveness of leased discovery keys, on core NATS: one message per process each period names every
    lease it holds by the key's last token, its instance id (an instance record and a model card of one
    worker share it). A watcher that has heard of a key treats it as gone once `ttl` seconds pass without
    a heartbeat naming it; keys never named live by their KV TTL alone (shared.runtime.heartbeat)."""

    ids: list[str]
    ttl: float
    v: int = PROTOCOL_VERSION


BOOTSTRAP_HOST, BOOTSTRAP_PORT = "bootstrap_host", "bootstrap_port"  # InstanceRecord.metadata keys


def bootstrap_metadata(host: str | None, port: int | None) -> dict[str, str]:
    """What an SGLang prefill worker adds to its instance record, so decode workers can pair with it."""
    return {BOOTSTRAP_HOST: host, BOOTSTRAP_PORT: str(port)} if host and port else {}


def bootstrap_of(rec: InstanceRecord) -> tuple[str, int] | None:
    """The (host, port) of an instance's SGLang bootstrap server, if it runs one."""
    host, port = rec.metadata.get(BOOTSTRAP_HOST), rec.metadata.get(BOOTSTRAP_PORT)
    return (host, int(port)) if host and port and port.isdigit() else None


DEFAULT_PAGE_SIZE = 16  # tokens per KV block, where an engine does not say (engines publish theirs)


class RuntimeConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the engine can hold and run; the router plans with it."""

    total_kv_blocks: int = 0
    page_size: int = DEFAULT_PAGE_SIZE
    max_running_requests: int = 0
    max_batched_tokens: int = 0
    max_waiting_requests: int = 0
    dp_size: int = 1
    disaggregation_mode: str = "null"  # "null" | "prefill" | "decode"
    bootstrap_host: str | None = None
    bootstrap_port: int | None = None


class ModelCard(msgspec.Struct, frozen=True, omit_defaults=True):
    """Published per worker instance; the frontend lists models from live cards."""

    name: str
    instance_id: str
    component: str
    endpoint: str = "generate"
    model_type: str = "chat"  # "chat" (also serves completions) | "completions" | "embedding" | "score"
    context_length: int = 4096
    kv_block_size: int = DEFAULT_PAGE_SIZE
    tokenizer_artifact: str = ""  # object name in the artifacts store
    engine: str = ""
    runtime: RuntimeConfig = RuntimeConfig()
    created: int = 0
    input_modalities: list[str] = msgspec.field(default_factory=lambda: ["text"])  # "image": takes image_url parts
    image_token: str = ""  # what the chat template gets for each image part (then one token)
    image_tokens: int = 0  # tokens one image becomes in the prompt (for the context-length check)
    tool_call_parser: str = ""  # SGLang's --tool-call-parser name the frontend parses output with
    reasoning_parser: str = ""  # SGLang's --reasoning-parser name
    loras: list[str] = []  # LoRA adapters this instance serves (each listed as a model whose parent is `name`)
    v: int = PROTOCOL_VERSION
