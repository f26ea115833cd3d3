"""One request inside the diffusion engine, and what a finished block hands to its stream."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from protocol.messages import EngineRequest
from shared.engine.diffusion.unmask import Block
from shared.engine.stream import RequestStream


@dataclass(eq=False)  # identity equality: `req in running` must not compare fields
class DiffusionRequest:
    request: EngineRequest
    tokens: list[int]  # the prompt, then every token streamed so far
    prompt_len: int
    limit: int  # most tokens it may produce (max_tokens, within the context length)
    stop_ids: frozenset[int]  # stop_token_ids, plus the eos ids unless ignore_eos
    temperature: float = 0.0
    generator: torch.Generator | None = None
    block: Block | None = None
    stream: RequestStream = field(default_factory=RequestStream)
    finished: bool = False

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def next_block(self, block_length: int, mask_id: int, steps: int) -> Block:
        """The next block: `block_length` masks after everything committed so far."""
        self.block = Block.new(len(self.tokens), block_length, mask_id, steps)
        return self.block

    def banned_rows(self) -> int:
        """Offsets of the current block where stop tokens may not be predicted (min_tokens)."""
        return max(0, self.request.stop.min_tokens - self.generated)


@dataclass(frozen=True)
class BlockOutput:
    """The part of a finished block that is streamed, and how the request ends (None: it goes on)."""

    tokens: list[int]
    logprobs: list[float]
    finish_reason: str | None = None
    stop_reason: int | None = None


def block_output(req: DiffusionRequest, block: Block) -> BlockOutput:
    """Tokens of `block` in order, up to the first stop token (kept, as every engine does) or the limit.

    A stop token counts only once `min_tokens` tokens came before it (the unmasking bans it
    earlier, so this matters only for ids the ban could not cover).
    """
    tokens: list[int] = []
    logprobs: list[float] = []
    min_tokens = req.request.stop.min_tokens
    for tok, lp in zip(block.tokens, block.logprobs, strict=True):
        tokens.append(tok)
        logprobs.append(lp)
        produced = req.generated + len(tokens)
        if tok in req.stop_ids and produced > min_tokens:
            return BlockOutput(tokens, logprobs, "stop", tok)
        if produced >= req.limit:
            return BlockOutput(tokens, logprobs, "length")
    return BlockOutput(tokens, logprobs)
