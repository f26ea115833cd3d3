"""Continuous batching with chunked prefill over a BlockPool.

Each step takes running sequences first (decodes, then unfinished prefills, oldest
first), then admits waiting ones while the token budget, the running limit and
the free blocks allow. A prompt longer than the budget is prefilled over several
steps, so running decodes never stall behind it. When a decode needs a block and
none is free, the newest running sequence goes back to the waiting queue and is
recomputed later (its cached blocks usually make that cheap).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from shared.engine.reference.sequence import Sequence
from shared.kv.block_pool import BlockPool
from shared.kv.hashing import lora_root


@dataclass
class Scheduled:
    seq: Sequence
    start: int  # num_computed when scheduled
    num_tokens: int

    @property
    def samples(self) -> bool:
        """Whether this chunk reaches the end of the known tokens (so a token is drawn)."""
        return self.start + self.num_tokens == len(self.seq.tokens)


class Scheduler:
    def __init__(self, pool: BlockPool, max_running: int, max_batched_tokens: int, max_loras: int = 0) -> None:
        self.pool = pool
        self.max_loras = max_loras  # distinct LoRA adapters running at once (0: no limit)
        self.max_running = max_running
        self.max_batched_tokens = max_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[Scheduled]:
        budget = self.max_batched_tokens
        batch: list[Scheduled] = []
        decodes = [s for s in self.running if s.num_pending == 1]
        prefills = [s for s in self.running if s.num_pending > 1]
        for seq in decodes + prefills:  # decodes first: a long prefill never stalls them
            if budget == 0:
                break
            if seq not in self.running:  # preempted for an older sequence this step
                continue
            n = min(seq.num_pending, budget)
            if self._reserve(seq, seq.num_computed + n):
                batch.append(Scheduled(seq, seq.num_computed, n))
                budget -= n
        while self.waiting and len(self.running) < self.max_running and budget > 0:
            seq = self.waiting[0]
            if not self._lora_fits(seq) or not self._admit(seq):
                break
            self.waiting.popleft()
            self.running.append(seq)
            n = min(seq.num_pending, budget)
            batch.append(Scheduled(seq, seq.num_computed, n))
            budget -= n
        return batch

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out of the queues and free its blocks (finish or abort)."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        if seq.table is not None:
            self.pool.free(seq.table)
            seq.table = None

    def _admit(self, seq: Sequence) -> bool:
        if seq.table is not None:  # KV imported from a prefill worker
            return True
        table = self.pool.allocate(seq.tokens, root=lora_root(seq.request.lora))
        if table is None:
            return False
        seq.table = table
        seq.num_computed = 0 if seq.prompt is not None else table.num_cached_tokens  # prompt logprobs: recompute
        if not seq.admitted:
            seq.cached_tokens = seq.num_computed
            seq.admitted = True
            seq.stream.scheduled()
        return True

    def _lora_fits(self, seq: Sequence) -> bool:
        lora = seq.request.lora
        if not lora or not self.max_loras:
            return True
        running = {s.request.lora for s in self.running if s.request.lora}
        return lora in running or len(running) < self.max_loras

    def _reserve(self, seq: Sequence, num_tokens: int) -> bool:
        """Blocks for `num_tokens` tokens, preempting newer sequences if needed; False if seq itself went."""
        assert seq.table is not None
        while not self.pool.grow(seq.table, num_tokens):
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.num_preemptions += 1
        self.running.remove(seq)
        assert seq.table is not None
        self.pool.free(seq.table)
        seq.table = None
        seq.num_computed = 0
        self.waiting.appendleft(seq)
