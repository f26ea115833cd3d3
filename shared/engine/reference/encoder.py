"""The reference engine for encoder embedding models (BERT family): bidirectional forward, then pooling.

No KV cache and no generation: every `embed` call runs its inputs through the
model in right-padded batches (the attention mask hides the padding), in one
worker thread so the event loop stays free, and pools them as the model's
sentence-transformers config asks (mean for BERT models without one).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
import torch

from protocol.discovery import RuntimeConfig
from protocol.messages import EngineRequest, ErrorCode, OutputChunk
from shared.engine.base import Engine, EngineError, EngineLoad, check_embed_inputs
from shared.engine.reference.config import ReferenceConfig
from shared.engine.reference.model_runner import resolve_dtype
from shared.engine.reference.pooling import PoolingSpec, embed_batches, padded_batch, pool, read_pooling

log = structlog.get_logger(__name__)

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "camembert")


def is_encoder(model_dir: str) -> bool:
    """Whether `model_dir` holds an encoder-only model (its config.json's model_type)."""
    cfg = Path(model_dir) / "config.json"
    return cfg.is_file() and json.loads(cfg.read_text()).get("model_type") in ENCODER_TYPES


class _Encoder:
    """The model and its pooling; runs only in the engine's thread."""

    def __init__(self, cfg: ReferenceConfig) -> None:
        from transformers import AutoModel

        self.device = torch.device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.model = AutoModel.from_pretrained(cfg.model_path, dtype=self.dtype).to(self.device).eval()
        self.pooling = read_pooling(cfg.model_path, PoolingSpec("mean"))
        self.vocab_size = int(self.model.config.vocab_size)
        self.max_length = _max_length(cfg.model_path, int(self.model.config.max_position_embeddings))

    @torch.inference_mode()
    def embed(self, inputs: list[list[int]], normalize: bool, max_batch_tokens: int) -> list[list[float]]:
        out: list[list[float]] = []
        for batch in embed_batches(inputs, max_batch_tokens):
            ids, mask = padded_batch(batch, self.device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            out.extend(pool(hidden, mask, self.pooling, normalize).cpu().tolist())
        return out


class EncoderEngine(Engine):
    name = "reference"

    def __init__(self, cfg: ReferenceConfig) -> None:
        self.cfg = cfg
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._encoder: _Encoder | None = None
        self._running = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)
        self._encoder = enc = await loop.run_in_executor(self._executor, _Encoder, self.cfg)
        log.info("engine_ready", engine=self.name, model=self.cfg.model_path, kind="encoder",
                 pooling=enc.pooling.mode, normalize=enc.pooling.normalize)

    async def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(total_kv_blocks=0, page_size=self.cfg.page_size, max_running_requests=self.cfg.max_running,
                             max_batched_tokens=self.cfg.max_batched_tokens,
                             max_waiting_requests=self.cfg.max_waiting)

    def context_length(self) -> int:
        limit = self._enc().max_length
        return min(self.cfg.context_length, limit) if self.cfg.context_length > 0 else limit

    def load(self) -> EngineLoad:
        return EngineLoad(self._running, 0, 0, 0)

    async def generate(self, request: EngineRequest) -> AsyncIterator[OutputChunk]:
        raise EngineError(ErrorCode.BAD_REQUEST, "this is an encoder (embedding) model: it does not generate")
        yield  # an async generator, as the interface says

    async def embed(self, inputs: list[list[int]], normalize: bool = True) -> list[list[float]]:
        enc = self._enc()
        check_embed_inputs(inputs, self.context_length())
        if any(t < 0 or t >= enc.vocab_size for ids in inputs for t in ids):
            raise EngineError(ErrorCode.BAD_REQUEST, f"token id out of the vocabulary (0..{enc.vocab_size - 1})")
        self._running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, enc.embed, inputs, normalize, self.cfg.max_batched_tokens)
        finally:
            self._running -= 1

    def _enc(self) -> _Encoder:
        if self._encoder is None:
            raise EngineError(ErrorCode.ENGINE_ERROR, "engine not started")
        return self._encoder


def _max_length(model_dir: str, max_positions: int) -> int:
    """sentence-transformers' `max_seq_length` where the model names one, else its position limit."""
    st = Path(model_dir) / "sentence_bert_config.json"
    limit: Any = json.loads(st.read_text()).get("max_seq_length") if st.is_file() else None
    return min(int(limit), max_positions) if limit else max_positions
