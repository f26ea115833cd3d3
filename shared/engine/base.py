"""The engine interface every adapter implements (sglang, reference, mock).

A worker service drives an engine through this and nothing else:

    engine = make_engine(cfg)           # shared.engine.registry
    await engine.start()                # ready when it returns (readiness gate)
    engine.runtime_config()             # published in the model card
    async for chunk in engine.generate(req): ...   # cancel the iterator to abort
    engine.set_kv_event_sink(fn)        # KV events, batched, in order
    engine.load()                       # for the router, polled a few times a second
    await engine.stop()

What an engine can do beyond that (embeddings, KV export/import for
disaggregation, images) is a typed capability: shared/engine/capabilities.py.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from protocol.discovery import RuntimeConfig
from protocol.kv_events import KvEvent
from protocol.messages import EngineRequest, ErrorCode, OutputChunk
from shared.errors import EngineError


class KvEventSink(Protocol):
    """Takes an engine's KV events; `dp_rank` names the data-parallel rank whose cache changed."""

    def __call__(self, events: list[KvEvent], dp_rank: int = 0) -> None: ...


@dataclass(frozen=True)
class EngineLoad:
    running: int = 0
    waiting: int = 0
    kv_used_blocks: int = 0
    kv_total_blocks: int = 0
    prefill_tokens: int = 0  # prompt tokens of the waiting requests


@dataclass
class KvHandoff:
    """Where a prefilled request's KV can be fetched from (disaggregation)."""

    request_id: str
    block_ids: list[int]
    num_tokens: int
    first_token: int
    first_logprob: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


def check_embed_inputs(inputs: list[list[int]], context_length: int) -> None:
    """Refuse what no embedding engine can serve: no inputs, an empty input, one longer than the context."""
    if not inputs:
        raise EngineError(ErrorCode.BAD_REQUEST, "no inputs to embed")
    for i, ids in enumerate(inputs):
        if not ids:
            raise EngineError(ErrorCode.BAD_REQUEST, f"input {i} is empty")
        if len(ids) > context_length:
            raise EngineError(ErrorCode.CONTEXT_LENGTH, f"input {i} has {len(ids)} tokens; this model's "
                              f"maximum context length is {context_length} tokens")


def check_token_ids(request: EngineRequest, vocab_size: int) -> None:
    """Refuse token ids outside the vocabulary before a request joins a batch: one bad id would otherwise
    fail every request of the step it runs in (an index past the logits row)."""
    bad = next((t for t in request.stop.stop_token_ids if not 0 <= t < vocab_size), None)
    if bad is None:
        bad = next((t for t in request.sampling.logit_bias if not 0 <= t < vocab_size), None)
    if bad is None and any(t < 0 for t in request.token_ids):
        bad = min(request.token_ids)
    if bad is not None:
        raise EngineError(ErrorCode.BAD_REQUEST, f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})")


class Engine(abc.ABC):
    name: str = "engine"
    accepts_images: bool = False  # prompts may carry images (the model card lists the image modality)

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model and warm up; return only when requests can be served."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Abort everything and release resources."""

    @abc.abstractmethod
    def runtime_config(self) -> RuntimeConfig: ...

    @abc.abstractmethod
    def generate(self, request: EngineRequest) -> AsyncIterator[OutputChunk]:
        """Stream output chunks; the last has finish_reason and usage.

        Closing or cancelling the iterator aborts the request and frees its blocks.
        """

    @abc.abstractmethod
    def load(self) -> EngineLoad: ...

    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        """Receive KV events; engines without a cache may ignore it."""

    def context_length(self) -> int:
        return 4096


def refuse_prompt_logprobs(request: EngineRequest, engine: str) -> None:
    """Engines that cannot score a prompt (mock, diffusion) answer a request asking for it with a clear 400."""
    if request.output.prompt_logprobs is not None:
        raise EngineError(ErrorCode.BAD_REQUEST, f"the {engine} engine does not compute prompt logprobs "
                          "(echo with logprobs); serve this model with the reference or sglang engine")
