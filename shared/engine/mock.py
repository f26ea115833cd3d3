"""The mock engine: no model, simulated timing, real block accounting and KV events.

Time per step comes from a cost model (prefill cost of uncached tokens, decode
cost of batch size and context), divided by `speedup`. Output tokens are a
deterministic function of the sequence so far, so a request re-sent with the
tokens already produced (migration) continues exactly as it would have.
Embeddings are a seeded hash of the token ids (`embedding_dim` floats): the
same input always gives the same vector, and the time is the prefill cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec

from protocol.discovery import DEFAULT_PAGE_SIZE, RuntimeConfig
from protocol.messages import EngineRequest, ErrorCode, OutputChunk, Usage
from shared.config.flags import FlagGroup, flag
from shared.engine.adapters import AdapterSet
from shared.engine.base import Engine, EngineError, EngineLoad, KvEventSink, check_embed_inputs, refuse_prompt_logprobs
from shared.engine.grammar import EngineGrammars
from shared.engine.priority import enqueue
from shared.engine.stream import RequestStream
from shared.grammar import TokenMask
from shared.kv.block_pool import BlockPool, BlockTable
from shared.kv.hashing import lora_root
from shared.runtime.tasks import cancel_and_wait

# Test-only: while the file this names exists, the engine's step loop stands still (an engine that stops
# answering, for the canary tests). Never set in a deployment.
HANG_FILE_ENV = "SHOAL_TEST_MOCK_HANG_FILE"

class MockConfig(msgspec.Struct, frozen=True):
    num_blocks: int = 16384
    page_size: int = DEFAULT_PAGE_SIZE
    max_running: int = 256
    max_waiting: int = 1024
    max_batched_tokens: int = 8192
    # SGLang's --chunked-prefill-size: prefill tokens one step runs at most; a longer prompt is prefilled in
    # chunks over several steps, and a request of a larger priority that arrives meanwhile goes between them.
    # SGLang's 8192 on an H100; at the mock's 0.02 ms a token a full chunk costs ~165 ms. <= 0: off.
    chunked_prefill_size: int = 8192
    # SGLang's --enable-mixed-chunk: decode the running requests in the steps that prefill; off (SGLang's
    # default) a step with prefill work runs only that, as SGLang's scheduler does.
    enable_mixed_chunk: bool = False
    context_length: int = 8192
    speedup: float = 1.0
    prefill_base_ms: float = 1.0
    prefill_ms_per_token: float = 0.02
    decode_base_ms: float = 5.0
    decode_ms_per_seq: float = 0.02
    decode_ms_per_ktoken: float = 0.5
    output_tokens: list[int] = msgspec.field(default_factory=lambda: list(range(97, 123)))  # ids it emits
    eos_token_id: int | None = None
    embedding_dim: int = 64
    model_path: str = ""  # its tokenizer, for structured output (grammars)
    enable_lora: bool = False  # adapters are names only: no math, their own KV hash chain
    lora_paths: dict[str, str] = {}


MOCK_FLAGS = FlagGroup(
    "mock engine", MockConfig,
    flag("speedup", "--speedup-ratio", help="simulated time divided by this"),
    flag("prefill_ms_per_token", "--prefill-ms-per-token", help="prefill cost of an uncached token"),
    flag("chunked_prefill_size", "--chunked-prefill-size",
         help="mock: prefill tokens a step runs at most (a longer prompt goes in chunks over steps); <= 0 off"),
    flag("enable_mixed_chunk", "--enable-mixed-chunk", help="mock: decode in the steps that prefill too"),
)


@dataclass(eq=False)  # identity: membership tests must not compare every field
class _Seq:
    request: EngineRequest
    tokens: list[int]
    stream: RequestStream = field(default_factory=RequestStream)
    table: BlockTable | None = None
    generated: int = 0
    prompt_len: int = 0
    cached_tokens: int = 0
    prefilled: int = 0  # tokens whose KV is computed (cached ones included); < len(tokens): mid-prefill
    mask: TokenMask | None = None  # structured output: it draws only tokens the grammar allows


class MockEngine(Engine):
    name = "mock"

    def __init__(self, cfg: MockConfig) -> None:
        self.cfg = cfg
        self._sink: KvEventSink | None = None
        self.pool = BlockPool(cfg.num_blocks, cfg.page_size, self._on_events)
        self._waiting: deque[_Seq] = deque()
        self._running: list[_Seq] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hang_file = os.environ.get(HANG_FILE_ENV, "")
        self._grammars: EngineGrammars | None = None
        self.adapters = AdapterSet(cfg.enable_lora)
        for name, path in cfg.lora_paths.items():
            self.adapters.added(name, path)

    # ---- LoRA adapters (accounted, no math) ----------------------------------------------
    def lora_names(self) -> list[str]:
        return self.adapters.names()

    async def load_lora(self, name: str, path: str) -> None:
        self.adapters.check_new(name)
        self.adapters.added(name, path)

    async def unload_lora(self, name: str) -> None:
        await self.adapters.drain(name)
        self.adapters.removed(name)

    # ---- Engine interface --------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="mock-engine")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        for seq in [*self._running, *self._waiting]:
            seq.stream.fail(EngineError(ErrorCode.ENGINE_ERROR, "engine stopped"))
            self._release(seq)

    def runtime_config(self) -> RuntimeConfig:
        c = self.cfg
        return RuntimeConfig(
            total_kv_blocks=c.num_blocks,
            page_size=c.page_size,
            max_running_requests=c.max_running,
            max_batched_tokens=c.max_batched_tokens,
            max_waiting_requests=c.max_waiting,
        )

    def context_length(self) -> int:
        return self.cfg.context_length

    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        self._sink = sink

    def load(self) -> EngineLoad:
        return EngineLoad(len(self._running), len(self._waiting), self.pool.num_used, self.cfg.num_blocks,
                          sum(len(s.tokens) for s in self._waiting))

    async def generate(self, request: EngineRequest) -> AsyncIterator[OutputChunk]:
        seq = self._admit_check(request)
        seq.mask = await self._grammar_mask(request)
        enqueue(self._waiting, seq)
        self._wake.set()
        try:
            async for chunk in seq.stream.chunks():
                yield chunk
        finally:
            if not seq.stream.done:
                self._abort(seq)

    async def embed(self, inputs: list[list[int]], normalize: bool = True) -> list[list[float]]:
        c = self.cfg
        check_embed_inputs(inputs, c.context_length)
        tokens = sum(len(ids) for ids in inputs)
        await self._sleep((c.prefill_base_ms + c.prefill_ms_per_token * tokens) / c.speedup)
        return [mock_embedding(ids, c.embedding_dim, normalize) for ids in inputs]

    async def _grammar_mask(self, request: EngineRequest) -> TokenMask | None:
        if request.grammar is None:
            return None
        if self._grammars is None:
            if not self.cfg.model_path:
                raise EngineError(ErrorCode.BAD_REQUEST, "structured output on the mock engine needs --model-path "
                                  "(the tokenizer)")
            from shared.tokenizer import Tokenizer

            tok = Tokenizer.from_dir(self.cfg.model_path)
            eos = {self.cfg.eos_token_id} if self.cfg.eos_token_id is not None else tok.eos_token_ids
            self._grammars = EngineGrammars(self.cfg.model_path, tok.vocab_size, eos)
        return await self._grammars.mask_for(request)

    # ---- scheduling ------------------------------------------------------------------
    def _admit_check(self, request: EngineRequest) -> _Seq:
        n = len(request.token_ids)
        refuse_prompt_logprobs(request, self.name)
        if n == 0:
            raise EngineError(ErrorCode.BAD_REQUEST, "empty prompt")
        if n + request.stop.max_tokens > self.cfg.context_length:
            raise EngineError(ErrorCode.CONTEXT_LENGTH, f"{n} prompt + {request.stop.max_tokens} "
                              f"new tokens exceed the context length {self.cfg.context_length}")
        if self.pool.blocks_needed(n + 1) > self.cfg.num_blocks:
            raise EngineError(ErrorCode.CONTEXT_LENGTH, "prompt larger than the whole KV cache")
        if len(self._waiting) >= self.cfg.max_waiting:
            raise EngineError(ErrorCode.OVERLOADED, "engine queue full")
        seq = _Seq(request=request, tokens=list(request.token_ids), prompt_len=n)
        if request.lora:
            self.adapters.use(request.lora, seq)
        return seq

    async def _loop(self) -> None:
        while True:
            if not self._waiting and not self._running:
                self._wake.clear()
                await self._wake.wait()
            while self._hung():
                await asyncio.sleep(0.05)
            ready = [s for s in self._running if s.prefilled >= len(s.tokens)]
            chunks = self._schedule()
            decoding = ready if self.cfg.enable_mixed_chunk or not chunks else []
            await self._sleep(self._step_ms(list(chunks), sum(chunks.values()), decoding))
            for seq, n in chunks.items():
                if seq in self._running:
                    self._prefilled(seq, n)
            for seq in decoding:
                if seq in self._running and self._grow(seq):
                    self._emit(seq)

    def _hung(self) -> bool:
        return bool(self._hang_file) and os.path.exists(self._hang_file)  # a stat: too small for a thread

    def _budget(self) -> int:
        c = self.cfg
        return min(c.max_batched_tokens, c.chunked_prefill_size) if c.chunked_prefill_size > 0 \
            else c.max_batched_tokens

    def _schedule(self) -> dict[_Seq, int]:
        """This step's prefill work: tokens per request. Requests mid-prefill and waiting ones share the budget
        by priority (mid-prefill first among equals); only the last one taken may get a partial chunk."""
        budget = self._budget()
        chunks: dict[_Seq, int] = {}
        partial = [s for s in self._running if s.prefilled < len(s.tokens)]
        while budget > 0:
            top = max(partial, key=lambda s: s.request.priority or 0, default=None)
            head = self._waiting[0] if self._waiting and len(self._running) < self.cfg.max_running else None
            if head is not None and (top is None or (head.request.priority or 0) > (top.request.priority or 0)):
                if not self._start(head, not chunks, budget):
                    break
                top = head
            elif top is None:
                break
            else:
                partial.remove(top)
            n = len(top.tokens) - top.prefilled
            if self.cfg.chunked_prefill_size > 0:
                n = min(n, budget)  # off: a prompt longer than the budget runs whole, alone
            chunks[top] = n
            budget -= n
        return chunks

    def _start(self, seq: _Seq, first: bool, budget: int) -> bool:
        """Move the waiting head into running with its blocks (all of them: the prompt's KV is reserved up
        front); False when the pool cannot hold it or (chunking off) a later prompt would not fit the step."""
        table = self.pool.allocate(seq.tokens, root=lora_root(seq.request.lora))
        if table is None:
            return False
        if self.cfg.chunked_prefill_size <= 0 and not first and len(seq.tokens) - table.num_cached_tokens > budget:
            self.pool.free(table)
            return False
        self._waiting.popleft()
        seq.table = table
        seq.prefilled = table.num_cached_tokens
        if seq.generated == 0:
            seq.cached_tokens = table.num_cached_tokens
            seq.stream.scheduled()
        self.pool.commit(table, seq.tokens[:seq.prefilled])
        self._running.append(seq)
        return True

    def _prefilled(self, seq: _Seq, n: int) -> None:
        """`n` more prompt tokens computed: their full blocks enter the cache; the whole prompt done, a token."""
        assert seq.table is not None
        seq.prefilled += n
        if seq.prefilled < len(seq.tokens):
            self.pool.commit(seq.table, seq.tokens[:seq.prefilled])
        else:
            self._emit(seq)  # commits every full block

    def _grow(self, seq: _Seq) -> bool:
        assert seq.table is not None
        if self.pool.grow(seq.table, len(seq.tokens) + 1):
            return True
        self._preempt()
        return seq in self._running and self.pool.grow(seq.table, len(seq.tokens) + 1)

    def _preempt(self) -> None:
        """Out of blocks: put the newest running request back to recompute later."""
        victim = self._running.pop()
        assert victim.table is not None
        self.pool.free(victim.table)
        victim.table = None
        victim.prefilled = 0
        self._waiting.appendleft(victim)

    def _step_ms(self, prefilling: list[_Seq], uncached: int, decoding: list[_Seq]) -> float:
        c = self.cfg
        ms = 0.0
        if prefilling:
            ms += c.prefill_base_ms + c.prefill_ms_per_token * uncached
        if decoding:
            ctx = sum(len(s.tokens) for s in decoding)
            ms += c.decode_base_ms + c.decode_ms_per_seq * len(decoding) + c.decode_ms_per_ktoken * ctx / 1000
        return ms / c.speedup

    @staticmethod
    async def _sleep(ms: float) -> None:
        await asyncio.sleep(ms / 1000 if ms >= 0.05 else 0)

    def _next_token(self, seq: _Seq) -> int:
        """The scheduled token scores 1 and every other 0 (a grammar's allowed tokens only); logit_bias is added,
        the best score wins."""
        out: list[int] = self.cfg.output_tokens if seq.mask is None else seq.mask.allowed_ids().tolist()
        scheduled = out[(seq.tokens[-1] * 7 + len(seq.tokens)) % len(out)]
        bias = seq.request.sampling.logit_bias
        if not bias or seq.mask is not None:
            return scheduled
        scores = {t: float(t == scheduled) + bias.get(t, 0.0) for t in sorted({*out, *bias})}
        return max(scores, key=lambda t: (scores[t], t == scheduled))

    def _emit(self, seq: _Seq) -> None:
        token = self._next_token(seq)
        seq.tokens.append(token)
        seq.prefilled = len(seq.tokens)  # decoding from here: the next steps are decode steps, not prefill
        seq.generated += 1
        seq.stream.push(token, 0.0 if seq.request.output.logprobs is not None else None)  # certain: its only pick
        assert seq.table is not None
        self.pool.commit(seq.table, seq.tokens)
        stop = seq.request.stop
        reason: str | None = None
        if seq.mask is not None and (not seq.mask.accept(token) or seq.mask.done):
            reason = "stop"  # the grammar is complete
        elif token in stop.stop_token_ids or (token == self.cfg.eos_token_id and not stop.ignore_eos):
            reason = "stop" if seq.generated >= stop.min_tokens else None
        if seq.generated >= stop.max_tokens:
            reason = "length"
        if reason is not None:
            usage = Usage(seq.prompt_len, seq.generated, seq.cached_tokens)
            seq.stream.finish(reason, usage, token if reason == "stop" else None)
            self._release(seq)

    def _abort(self, seq: _Seq) -> None:
        if seq in self._waiting:
            self._waiting.remove(seq)
        self._release(seq)

    def _release(self, seq: _Seq) -> None:
        self.adapters.done(seq)
        if seq in self._running:
            self._running.remove(seq)
        if seq.table is not None:
            self.pool.free(seq.table)
            seq.table = None

    def _on_events(self, events: list) -> None:
        if self._sink is not None:
            self._sink(events)


def mock_embedding(token_ids: list[int], dim: int, normalize: bool = True) -> list[float]:
    """A deterministic vector for these token ids: Gaussian draws seeded by their hash."""
    digest = hashlib.blake2b(",".join(map(str, token_ids)).encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "little"))
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    if normalize:
        norm = math.sqrt(sum(x * x for x in vec)) or 1.0
        vec = [x / norm for x in vec]
    return vec
