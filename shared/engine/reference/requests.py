"""What the reference engine makes of a request: its sampling spec, a step's item for the model thread, and
the blocks reserved for a prompt whose KV was computed elsewhere (disaggregation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from protocol.messages import EngineRequest, ErrorCode
from shared.engine.base import EngineError
from shared.engine.reference.images import chunk_embeds
from shared.engine.reference.model_runner import StepItem
from shared.engine.reference.prompt_logprobs import prompt_targets
from shared.engine.reference.scheduler import Scheduled
from shared.engine.reference.sequence import SamplingSpec
from shared.kv.block_pool import BlockPool, BlockTable


@dataclass
class ImportedKv:
    """Blocks reserved for KV written by a transfer layer; `generate()` then decodes from them.

    Blocks before `num_cached_tokens // page_size` already hold this prompt's KV
    (local prefix cache); only the rest must be written.
    """

    request_id: str
    block_ids: list[int]
    num_cached_tokens: int
    first_token: int
    first_logprob: float | None
    table: BlockTable
    token_ids: list[int]


def check_request(request: EngineRequest, context_length: int, pool: BlockPool, room: bool) -> None:
    """A request this engine can never serve, or cannot queue now (`room`: the waiting queue has room): refused."""
    n, max_tokens = len(request.token_ids), request.stop.max_tokens
    if n == 0:
        raise EngineError(ErrorCode.BAD_REQUEST, "empty prompt")
    if n + max_tokens > context_length:
        raise EngineError(ErrorCode.CONTEXT_LENGTH, f"{n} prompt + {max_tokens} new tokens exceed "
                          f"the context length {context_length}")
    if pool.blocks_needed(n + max_tokens) > pool.num_blocks:
        raise EngineError(ErrorCode.CONTEXT_LENGTH, "request larger than the whole KV cache")
    if not room:
        raise EngineError(ErrorCode.OVERLOADED, "engine queue full")


def sampling_spec(request: EngineRequest, device: torch.device) -> SamplingSpec:
    s = request.sampling
    gen = None
    if s.seed is not None and s.temperature > 0:
        gen = torch.Generator(device=device).manual_seed(s.seed)
    return SamplingSpec(s.temperature, s.top_p, s.top_k, s.min_p, gen, request.output.logprobs,
                        dict(s.logit_bias), s.repetition_penalty, s.frequency_penalty, s.presence_penalty)


def step_item(s: Scheduled) -> StepItem:
    """The model thread's view of one scheduled sequence: its tokens this step, blocks, sampling and masks."""
    seq = s.seq
    assert seq.table is not None
    samples = s.samples
    end = s.start + s.num_tokens
    history = (seq.tokens[:end], seq.prompt_len) if samples and seq.sampling.adjusts else None
    prompt = seq.prompt is not None and s.start < seq.prompt_len
    return StepItem(seq.tokens[s.start : end], s.start, list(seq.table.block_ids),
                    seq.sampling if samples else None, seq.banned_ids() if samples else frozenset(),
                    history, chunk_embeds(seq, s.start, end), seq.mask if samples else None,
                    seq.request.lora,
                    prompt_targets(seq.tokens, seq.prompt_len, s.start, s.num_tokens) if prompt else None,
                    seq.prompt.top_k if seq.prompt is not None else 0)
