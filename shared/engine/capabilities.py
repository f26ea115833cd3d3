"""What an engine can do beyond generate, as types: a role asks `isinstance(engine, KvExport)`, never `hasattr`.

Each capability is a `runtime_checkable` Protocol naming the members a role
uses; an engine has it by implementing them (`Engine` itself declares none).

| capability   | engines                 | used by                                                  |
|--------------|-------------------------|----------------------------------------------------------|
| Embedder     | reference, mock, sglang | the embedding role                                       |
| Scorer       | reference, sglang       | the score role (cross-encoders: /v1/rerank, /v1/score)   |
| KvExport     | reference               | the prefill role (writes KV over shoal's NIXL agent)     |
| KvImport     | reference               | the decode role (reserves blocks, reads KV)              |
| BootstrapKv  | sglang                  | prefill and decode: the engine moves KV itself (room)    |
| ImageEncoder | reference               | the images wrapper (pixels -> the engine's vision tower) |
| LoraEngine   | reference, mock, sglang | the worker's `lora` endpoint and model card (adapters)   |

`Engine.accepts_images` says whether prompts may carry images at all (the model
card then lists the image modality); SGLang's own processor takes them by URL.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from protocol.messages import EngineRequest
from shared.engine.adapters import AdapterSet
from shared.engine.base import KvHandoff


@runtime_checkable
class Embedder(Protocol):
    async def embed(self, inputs: list[list[int]], normalize: bool = True) -> list[list[float]]:
        """One embedding per input (token ids), L2-normalised when `normalize`; in the inputs' order."""
        ...


@runtime_checkable
class Scorer(Protocol):
    async def score(self, inputs: list[list[int]], token_type_ids: list[list[int]],
                    texts: list[list[str]] | None = None) -> list[float]:
        """One relevance score per (query, document) pair, in order. `inputs` are the pairs' token ids as the
        tokenizer joins a pair, `token_type_ids` their segment ids ([] where the model has none); `texts`
        the pairs as text, for engines that tokenize pairs themselves (SGLang)."""
        ...


@runtime_checkable
class KvTensors(Protocol):
    # and `bytes_per_block: int` (a property, left out here: isinstance() would read it before start())
    def kv_tensors(self) -> list[Any]:
        """One contiguous tensor per layer; block b starts at b * bytes_per_block."""
        ...

    async def release(self, request_id: str) -> None:
        """Free KV held for a hand-off (after the transfer, or when it failed)."""
        ...


@runtime_checkable
class KvExport(KvTensors, Protocol):
    async def prefill(self, request: EngineRequest) -> KvHandoff:
        """Compute the prompt's KV only and keep it (until `release`) for a decode worker to fetch."""
        ...


@runtime_checkable
class KvImport(KvTensors, Protocol):
    def import_kv(self, request_id: str, token_ids: list[int], first_token: int,
                  first_logprob: float | None = None, lora: str = "") -> Any:
        """Reserve blocks for a prompt's KV computed elsewhere; `generate()` then decodes from them."""
        ...


@runtime_checkable
class PrefixCache(Protocol):
    def cached_prompt_tokens(self, token_ids: list[int], lora: str = "") -> int:
        """Prompt tokens whose KV this engine's prefix cache holds now (what a prefill here would skip)."""
        ...


@runtime_checkable
class BootstrapKv(Protocol):
    def bootstrap_address(self) -> tuple[str, int]:
        """Host and port of the engine's own bootstrap server (SGLang's), published in the instance record."""
        ...

    async def prefill(self, request: EngineRequest) -> KvHandoff:
        """Run the prompt with the request's bootstrap room; the engine hands the KV to its decode peer."""
        ...


@runtime_checkable
class ImageEncoder(Protocol):
    def vision_config(self) -> Any: ...

    async def encode_images(self, pixels: Any) -> Any:
        """`[N, 3, H, W]` pixels -> `[N, tokens, hidden]` embeddings."""
        ...

    def set_image_embeddings(self, request_id: str, embeddings: list[Any]) -> None: ...

    def drop_image_embeddings(self, request_id: str) -> None: ...


@runtime_checkable
class LoraEngine(Protocol):
    """An engine that serves LoRA adapters (`adapters.enabled`: started with --enable-lora)."""

    adapters: AdapterSet

    def lora_names(self) -> list[str]: ...

    async def load_lora(self, name: str, path: str) -> None: ...

    async def unload_lora(self, name: str) -> None: ...
