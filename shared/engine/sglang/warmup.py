"""What an SGLang engine runs before its worker registers, so the first users do not pay for compilation.

SGLang compiles kernels (Triton attention, the breakable prefill CUDA graph's eager pieces) on the
first use of each prefill shape, not at start-up: measured on an H200 with a fresh compile cache, the
first 976-token request after ready waited 8.6 s for its first token and the first 32 streams 0.57 s
at p50, against 0.15 s once warm (docs/bench/gpu_share.md). The plan below runs the shapes users hit
first: single prompts over a spread of lengths, a concurrent batch larger than one prefill chunk
(multi-sequence and chunked prefill, a decode batch) and repeats (the prefix-cache path). The prompts
are token ids from the middle of the vocabulary (far from special tokens), different per request, and
the prefix cache is flushed afterwards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LENGTHS = (16, 128, 512, 1024, 2048, 4096)
BATCH = 16
BATCH_LENGTH = 1024
REPEATS = 4
MAX_TOKENS = 8
SEED = 20261202


@dataclass(frozen=True)
class WarmupPlan:
    """Prompts (token ids) run one at a time, then all at once, then repeated at once."""

    singles: list[list[int]]
    batch: list[list[int]]
    repeats: list[list[int]]
    max_tokens: int = MAX_TOKENS

    def requests(self) -> int:
        return len(self.singles) + len(self.batch) + len(self.repeats)


def warmup_plan(context_length: int, vocab_size: int) -> WarmupPlan:
    """The warm-up for a model of `context_length` tokens and `vocab_size` ids."""
    room = max(1, context_length - MAX_TOKENS - 1)
    rng = random.Random(SEED)
    lo, hi = max(1, vocab_size // 8), max(2, vocab_size // 2)

    def prompt(n: int) -> list[int]:
        return [rng.randrange(lo, hi) for _ in range(min(n, room))]

    singles = [prompt(n) for n in sorted({min(n, room) for n in LENGTHS})]
    batch = [prompt(BATCH_LENGTH) for _ in range(BATCH)]
    repeats = [list(batch[i % 2]) for i in range(REPEATS)]
    return WarmupPlan(singles=singles, batch=batch, repeats=repeats)
