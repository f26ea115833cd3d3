"""The reference engine for cross-encoders (BERT-family `*ForSequenceClassification`, one label): pair scores.

A cross-encoder reads a (query, document) pair as one input (`[CLS] q [SEP] d [SEP]`, segment ids 0
then 1) and its classification head gives one logit; the score is its sigmoid, as sentence-transformers'
CrossEncoder, vLLM and SGLang answer for one-label heads. Pairs run in right-padded batches (the
attention mask hides the padding) in the engine's one thread, so the event loop stays free. `embed`
still works (the encoder's pooled states), as for any encoder model.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import structlog
import torch

from protocol.messages import ErrorCode
from shared.engine.base import EngineError, check_embed_inputs
from shared.engine.reference.config import ReferenceConfig
from shared.engine.reference.encoder import EncoderEngine
from shared.engine.reference.model_runner import resolve_dtype
from shared.engine.reference.pooling import embed_batches, padded_batch

log = structlog.get_logger(__name__)


def is_cross_encoder(model_dir: str) -> bool:
    """Whether `model_dir`'s config.json names a sequence-classification architecture."""
    cfg = Path(model_dir) / "config.json"
    if not cfg.is_file():
        return False
    return any(a.endswith("ForSequenceClassification") for a in json.loads(cfg.read_text()).get("architectures") or ())


class _Classifier:
    """The model; runs only in the engine's thread."""

    def __init__(self, cfg: ReferenceConfig) -> None:
        from transformers import AutoModelForSequenceClassification

        self.device = torch.device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.model = AutoModelForSequenceClassification.from_pretrained(cfg.model_path, dtype=self.dtype)
        self.model = self.model.to(self.device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{cfg.model_path}: a cross-encoder with {self.model.config.num_labels} labels; "
                             "shoal scores with one-label heads")

    @torch.inference_mode()
    def score(self, inputs: list[list[int]], types: list[list[int]], max_batch_tokens: int) -> list[float]:
        out: list[float] = []
        start = 0
        for batch in embed_batches(inputs, max_batch_tokens):
            ids, mask = padded_batch(batch, self.device)
            kw = {}
            if types:
                seg, _ = padded_batch(types[start : start + len(batch)], self.device)
                kw["token_type_ids"] = seg
            logits = self.model(input_ids=ids, attention_mask=mask, **kw).logits.float()
            out.extend(torch.sigmoid(logits[:, 0]).cpu().tolist())
            start += len(batch)
        return out


class CrossEncoderEngine(EncoderEngine):
    """An encoder engine that also scores pairs (capability `Scorer`)."""

    def __init__(self, cfg: ReferenceConfig) -> None:
        super().__init__(cfg)
        self._classifier: _Classifier | None = None

    async def start(self) -> None:
        await super().start()
        self._classifier = await asyncio.get_running_loop().run_in_executor(self._executor, _Classifier, self.cfg)
        log.info("cross_encoder_ready", model=self.cfg.model_path)

    async def score(self, inputs: list[list[int]], token_type_ids: list[list[int]],
                    texts: list[list[str]] | None = None) -> list[float]:
        if self._classifier is None:
            raise EngineError(ErrorCode.ENGINE_ERROR, "engine not started")
        check_embed_inputs(inputs, self.context_length())
        vocab = self._enc().vocab_size
        if any(t < 0 or t >= vocab for ids in inputs for t in ids):
            raise EngineError(ErrorCode.BAD_REQUEST, f"token id out of the vocabulary (0..{vocab - 1})")
        if token_type_ids and [len(x) for x in token_type_ids] != [len(x) for x in inputs]:
            raise EngineError(ErrorCode.BAD_REQUEST, "token_type_ids must match the inputs, one id per token")
        self._running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._classifier.score, inputs, token_type_ids, self.cfg.max_batched_tokens)
        finally:
            self._running -= 1
