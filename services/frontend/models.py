"""Live model list: model cards from discovery, a tokenizer, a client and a router per model.

A model's first card decides its type: chat models stream `OutputChunk`s from
their `generate` endpoint, embedding models answer one `EmbedResponse` from
`embed` (the card names the endpoint either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol import codec, subjects
from protocol.discovery import ModelCard
from protocol.embeddings import EmbedResponse
from protocol.messages import OutputChunk
from protocol.scoring import ScoreResponse
from shared.routing.base import Router
from shared.runtime.client import EndpointClient
from shared.runtime.discovery import KeyUpdate
from shared.runtime.models import ArtifactMismatch, fetch_tokenizer
from shared.runtime.runtime import Runtime
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger
from shared.tokenizer import Tokenizer

ARTIFACT_RETRY_S = 10.0  # a tampered tokenizer artifact is fetched again after this long (a worker may repair it)
log = get_logger("shoal.frontend.models")

RouterFactory = Callable[[str, ModelCard], Router]


@dataclass
class ModelEntry:
    name: str
    tokenizer: Tokenizer
    client: EndpointClient[Any]  # OutputChunk items (chat), EmbedResponse (embedding)
    router: Router
    cards: dict[str, ModelCard] = field(default_factory=dict)
    created: int = 0
    model_type: str = "chat"
    lora_client: EndpointClient[Any] | None = None  # the workers' `lora` endpoint, made on first use

    @property
    def is_embedding(self) -> bool:
        return self.model_type == "embedding"

    @property
    def is_scorer(self) -> bool:
        """A cross-encoder: serves /v1/rerank and /v1/score (protocol.scoring), not generation."""
        return self.model_type == "score"

    @property
    def image_input(self) -> tuple[str, int] | None:
        """(image token, tokens one image becomes) when the model takes images; None for a text model."""
        for c in self.cards.values():
            if "image" in c.input_modalities and c.image_token:
                return c.image_token, c.image_tokens
        return None

    @property
    def context_length(self) -> int:
        return min((c.context_length for c in self.cards.values()), default=0)

    @property
    def tool_call_parser(self) -> str | None:
        return next((c.tool_call_parser for c in self.cards.values() if c.tool_call_parser), None)

    @property
    def reasoning_parser(self) -> str | None:
        return next((c.reasoning_parser for c in self.cards.values() if c.reasoning_parser), None)

    def candidates(self, lora: str = "") -> list[str]:
        """Live, healthy instances of this model (serving adapter `lora`, when one is named)."""
        live = self.client.instances
        return [iid for iid, c in self.cards.items()
                if iid in live and live[iid].healthy and (not lora or lora in c.loras)]

    @property
    def loras(self) -> list[str]:
        """Every adapter some live instance serves, in first-seen order."""
        live = self.client.instances
        return list(dict.fromkeys(n for iid, c in self.cards.items() if iid in live for n in c.loras))


class ModelRegistry:
    def __init__(self, rt: Runtime, router_factory: RouterFactory, custom_template: str | None = None,
                 silence_timeout: float = 5.0) -> None:
        self.rt = rt
        self.silence_timeout = silence_timeout
        self.router_factory = router_factory
        self.custom_template = custom_template
        self.models: dict[str, ModelEntry] = {}
        self._tokenizers: dict[str, Tokenizer] = {}
        self._refused: dict[str, float] = {}  # tampered artifact -> when to look again
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self.parked: set[str] = set()  # models the planner can start with no worker live (cold_start.py)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="model-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), 5.0)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        for m in self.models.values():
            await m.router.stop()
            await m.client.stop()
            if m.lora_client is not None:
                await m.lora_client.stop()

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def serving(self) -> list[ModelEntry]:
        return [m for m in self.models.values() if m.candidates() or m.name in self.parked]

    async def park(self, card: ModelCard) -> None:
        """A model the planner can start: listed, its entry ready for the first worker (scale from zero)."""
        self.parked.add(card.name)
        if card.name not in self.models:
            self.models[card.name] = await self._new_entry(card)

    async def _watch(self) -> None:
        async def apply(upd: KeyUpdate) -> None:
            await self._apply(upd.key, upd.value)
            self._synced.set()

        await self.rt.discovery.follow(subjects.MODELS_BUCKET, subjects.model_key_filter(self.rt.namespace), apply)

    async def _apply(self, key: str, value: bytes | None) -> None:
        iid = key.rpartition(".")[2]
        if value is None:
            for m in self.models.values():
                if m.cards.pop(iid, None) is not None:
                    m.router.remove_instance(iid)
            return
        card = codec.decode(value, ModelCard)
        if card.runtime.disaggregation_mode == "prefill":
            return  # prefill workers serve the router service, not clients
        entry = self.models.get(card.name)
        if entry is not None and not entry.cards and _kind(card.model_type) != _kind(entry.model_type):
            await entry.router.stop()  # the name now serves another kind of model: start afresh
            await entry.client.stop()
            entry = None
        if entry is None:
            if time.monotonic() < self._refused.get(card.tokenizer_artifact, 0.0):
                return
            try:
                entry = await self._new_entry(card)
            except ArtifactMismatch as e:  # never serve a model with tampered tokenizer files (tried again later)
                self._refused[card.tokenizer_artifact] = time.monotonic() + ARTIFACT_RETRY_S
                log.error("tokenizer_artifact_mismatch", model=card.name, instance_id=iid, error=str(e))
                return
            self.models[card.name] = entry
        if _kind(card.model_type) != _kind(entry.model_type):
            log.warning("model_type_conflict", model=card.name, instance_id=iid, card_type=card.model_type,
                        serving_as=entry.model_type)
            return
        if iid not in entry.cards:
            entry.router.add_instance(iid)
        entry.router.set_capacity(iid, card.runtime.total_kv_blocks)
        entry.cards[iid] = card

    async def _new_entry(self, card: ModelCard) -> ModelEntry:
        tok = self._tokenizers.get(card.tokenizer_artifact)
        if tok is None:
            files = await fetch_tokenizer(self.rt, card.tokenizer_artifact)
            tok = Tokenizer.from_files(files, custom_chat_template=self.custom_template)
            self._tokenizers[card.tokenizer_artifact] = tok
        response = {"embedding": EmbedResponse, "score": ScoreResponse}.get(_kind(card.model_type), OutputChunk)
        client: EndpointClient[Any] = EndpointClient(
            self.rt, card.component, card.endpoint, response, keepalive_timeout=self.silence_timeout)
        await client.start()
        router = self.router_factory(card.name, card)
        await router.start()
        log.info("model_added", model=card.name, component=card.component, engine=card.engine)
        return ModelEntry(card.name, tok, client, router, created=card.created, model_type=card.model_type)


def resolve(models: dict[str, ModelEntry], name: str) -> tuple[ModelEntry | None, str]:
    """(model, LoRA adapter or "") for a request's `model`: a base name, an adapter's name or base:adapter."""
    if name in models:
        return models[name], ""
    base, sep, adapter = name.rpartition(":")
    if sep and base in models:
        return models[base], adapter
    for m in models.values():
        if any(name in c.loras for c in m.cards.values()):
            return m, name
    return None, ""


def _kind(model_type: str) -> str:
    """Which client a model needs: "embedding", "score", or "chat" for generating models (chat, completions)."""
    return model_type if model_type in ("embedding", "score") else "chat"
