"""One request's state inside the reference engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from protocol.messages import EngineRequest
from shared.engine.reference.prompt_logprobs import PromptLogprobs
from shared.engine.stream import RequestStream
from shared.grammar import TokenMask
from shared.kv.block_pool import BlockTable


@dataclass(frozen=True)
class SamplingSpec:
    """Per-request sampling settings, resolved once at admission."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    generator: torch.Generator | None = None
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: also top-k
    logit_bias: dict[int, float] = field(default_factory=dict)
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @property
    def adjusts(self) -> bool:
        """Whether sampling changes the logits first (shared.engine.reference.logits)."""
        return bool(self.logit_bias) or self.repetition_penalty != 1.0 or bool(self.frequency_penalty) \
            or bool(self.presence_penalty)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1


@dataclass(eq=False)  # identity equality: `seq in running` must not compare fields
class Sequence:
    request: EngineRequest
    tokens: list[int]
    prompt_len: int
    sampling: SamplingSpec
    stop_ids: frozenset[int]  # stop_token_ids, plus the eos ids unless ignore_eos
    stream: RequestStream = field(default_factory=RequestStream)
    table: BlockTable | None = None
    num_computed: int = 0  # tokens whose KV is in the cache
    generated: int = 0
    cached_tokens: int = 0  # prompt tokens found cached at first admission
    admitted: bool = False
    hold: bool = False  # prefill-only: keep the blocks after the first token
    finished: bool = False
    mm: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (prompt offset, image embeddings)
    mask: TokenMask | None = None  # structured output: the grammar's matcher
    prompt: PromptLogprobs | None = None  # asked for prompt logprobs (computed in prefill, never from cache)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def num_pending(self) -> int:
        return len(self.tokens) - self.num_computed

    @property
    def max_tokens(self) -> int:
        return 1 if self.hold else self.request.stop.max_tokens

    def banned_ids(self) -> frozenset[int]:
        """Ids that may not be sampled yet (min_tokens suppresses stops)."""
        return self.stop_ids if self.generated < self.request.stop.min_tokens else frozenset()
