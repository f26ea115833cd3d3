"""The reference engine: a Hugging Face model, continuous batching, paged KV with prefix reuse.

Scheduling and all bookkeeping (blocks, streams) stay on the event loop; each
step's model forward and sampling run in one dedicated worker thread, so the
loop stays free. Aborting a request frees its blocks at once, even while a step
that includes it is running: the step only writes into positions that no other
request can be given before that step ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
import torch

from protocol.discovery import RuntimeConfig
from protocol.kv_events import KvEvent
from protocol.messages import EngineRequest, ErrorCode, OutputChunk, TopLogprob, Usage
from shared.engine.adapters import AdapterSet
from shared.engine.base import (
    Engine,
    EngineError,
    EngineLoad,
    KvEventSink,
    KvHandoff,
    check_embed_inputs,
    check_token_ids,
)
from shared.engine.grammar import EngineGrammars
from shared.engine.priority import enqueue
from shared.engine.reference.config import ReferenceConfig
from shared.engine.reference.host_kv import HostKv
from shared.engine.reference.images import attach_images, images_missing
from shared.engine.reference.lora import LoraError
from shared.engine.reference.model_runner import ModelRunner, StepItem
from shared.engine.reference.prompt_logprobs import PromptLogprobs
from shared.engine.reference.requests import ImportedKv, check_request, sampling_spec, step_item
from shared.engine.reference.sampler import SampleOutput
from shared.engine.reference.scheduler import Scheduled, Scheduler
from shared.engine.reference.sequence import Sequence
from shared.grammar import TokenMask
from shared.kv.block_pool import BlockPool, BlockTable
from shared.kv.hashing import lora_root
from shared.kv.host_tier import HostTier
from shared.runtime.tasks import cancel_and_wait

log = structlog.get_logger(__name__)


class ReferenceEngine(Engine):
    name = "reference"

    def __init__(self, cfg: ReferenceConfig) -> None:
        self.cfg = cfg
        self.runner: ModelRunner | None = None
        self.pool: BlockPool | None = None
        self.scheduler: Scheduler | None = None
        self._sink: KvEventSink | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reference-step")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._held: dict[str, Sequence] = {}  # prefilled, blocks kept until release()
        self._imported: dict[str, ImportedKv] = {}
        self._images: dict[str, list[torch.Tensor]] = {}  # image embeddings given for a request to come
        self._in_step: set[Sequence] = set()  # sequences the running step writes KV for
        self._deferred: list[BlockTable] = []  # their tables, if aborted meanwhile
        self._context_length = 0
        self._grammar_cache: EngineGrammars | None = None
        self.adapters = AdapterSet(cfg.enable_lora)

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)
        loop = asyncio.get_running_loop()
        self.runner = runner = await loop.run_in_executor(self._executor, ModelRunner, self.cfg)
        host = None
        if self.cfg.host_kv_blocks > 0:  # evicted blocks wait in host memory for a reload
            host = HostTier(self.cfg.host_kv_blocks, HostKv(runner.kv, self.cfg.host_kv_blocks), self.cfg.page_size)
        self.pool = BlockPool(runner.kv.num_blocks, self.cfg.page_size, self._on_events, host)
        self.scheduler = Scheduler(self.pool, self.cfg.max_running, self.cfg.max_batched_tokens,
                                   self.cfg.max_loras_per_batch if self.cfg.enable_lora else 0)
        for name, path in self.cfg.lora_paths.items():
            await self.load_lora(name, path)
        limit = runner.max_position
        self._context_length = min(self.cfg.context_length, limit) if self.cfg.context_length > 0 else limit
        await loop.run_in_executor(self._executor, runner.step, [StepItem([0], 0, [0], None)])  # warm-up
        self._task = asyncio.create_task(self._loop(), name="reference-engine")
        log.info("engine_ready", engine=self.name, model=self.cfg.model_path, blocks=runner.kv.num_blocks,
                 device=str(runner.device), dtype=str(runner.dtype))

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
            self._end_step()
        if self.scheduler is not None:
            for seq in [*self.scheduler.running, *self.scheduler.waiting]:
                seq.stream.fail(EngineError(ErrorCode.ENGINE_ERROR, "engine stopped"))
                self._release(seq)
        for rid in [*self._held, *self._imported]:
            await self.release(rid)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- Engine interface --------------------------------------------------------------
    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(
            total_kv_blocks=self.pool.num_blocks if self.pool else self.cfg.num_blocks,
            page_size=self.cfg.page_size,
            max_running_requests=self.cfg.max_running,
            max_batched_tokens=self.cfg.max_batched_tokens,
            max_waiting_requests=self.cfg.max_waiting,
        )

    def context_length(self) -> int:
        return self._context_length

    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        self._sink = sink

    def load(self) -> EngineLoad:
        s, p = self.scheduler, self.pool
        if s is None or p is None:
            return EngineLoad()
        return EngineLoad(len(s.running), len(s.waiting), p.num_used, p.num_blocks,
                          sum(len(q.tokens) - q.num_computed for q in s.waiting))

    async def generate(self, request: EngineRequest) -> AsyncIterator[OutputChunk]:
        mask = await self._grammars().mask_for(request)
        imported = self._imported.pop(request.request_id, None)
        if imported is None:
            seq = self._new_seq(request, mask=mask)
        else:
            seq = self._seq_from_import(request, imported, mask)
        async with contextlib.aclosing(self._run(seq)) as chunks:  # closed (and aborted) with us
            async for chunk in chunks:
                yield chunk

    async def embed(self, inputs: list[list[int]], normalize: bool = True) -> list[list[float]]:
        """Pooled last hidden states, computed in the model thread (between steps, never beside one)."""
        runner = self._runner()
        check_embed_inputs(inputs, self._context_length)
        vocab = int(runner.hf_config.vocab_size)
        if any(t < 0 or t >= vocab for ids in inputs for t in ids):
            raise EngineError(ErrorCode.BAD_REQUEST, f"token id out of the vocabulary (0..{vocab - 1})")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, runner.embed, inputs, normalize,
                                          self.cfg.max_batched_tokens)

    async def prefill(self, request: EngineRequest) -> KvHandoff:
        seq = self._new_seq(request, mask=await self._grammars().mask_for(request))  # the first token obeys it
        seq.hold = True
        first_logprob: float | None = None
        async for chunk in self._run(seq):
            if chunk.logprobs:
                first_logprob = chunk.logprobs[0]
        assert seq.table is not None
        self._held[request.request_id] = seq
        return KvHandoff(request_id=request.request_id, block_ids=list(seq.table.block_ids),
                         num_tokens=seq.prompt_len, first_token=seq.tokens[seq.prompt_len],
                         first_logprob=first_logprob)

    async def release(self, request_id: str) -> None:
        seq = self._held.pop(request_id, None)
        if seq is not None and seq.table is not None:
            self._pool().free(seq.table)
            seq.table = None
        imported = self._imported.pop(request_id, None)
        if imported is not None:
            self._pool().free(imported.table)
        self._wake.set()

    # ---- LoRA adapters -------------------------------------------------------------------
    def lora_names(self) -> list[str]:
        return self.adapters.names()

    async def load_lora(self, name: str, path: str) -> None:
        """Load a peft adapter (read and checked aside, installed between steps); requests may name it from then on."""
        self.adapters.check_new(name)
        lora = self._runner().lora
        assert lora is not None  # enabled, as check_new says
        try:  # read and checked in a thread of its own: steps go on meanwhile
            adapter = await asyncio.to_thread(lora.read, name, path)
            self.adapters.check_new(name)
            await asyncio.get_running_loop().run_in_executor(self._executor, lora.install, adapter)
        except LoraError as e:
            raise EngineError(ErrorCode.BAD_REQUEST, str(e)) from e
        self.adapters.added(name, path)
        log.info("lora_loaded", name=name, path=path)

    async def unload_lora(self, name: str) -> None:
        """Take no new request for `name`, wait for those using it, then free it."""
        await self.adapters.drain(name)
        lora = self._runner().lora
        assert lora is not None
        await asyncio.get_running_loop().run_in_executor(self._executor, lora.unload, name)
        self.adapters.removed(name)
        log.info("lora_unloaded", name=name)

    # ---- images (vision-language models) -------------------------------------------------
    @property
    def accepts_images(self) -> bool:  # type: ignore[override]
        return self.runner is not None and self.runner.vision is not None

    def vision_config(self) -> Any:
        """The Llava config (vision tower, image token) of a vision-language model."""
        runner = self._runner()
        if runner.vision is None:
            raise EngineError(ErrorCode.BAD_REQUEST, "this model takes no images")
        return runner.vision.cfg

    async def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> `[N, tokens, hidden]`, in the model thread (between steps)."""
        runner = self._runner()
        return await asyncio.get_running_loop().run_in_executor(self._executor, runner.encode_images, pixels)

    def set_image_embeddings(self, request_id: str, embeddings: list[torch.Tensor]) -> None:
        """Embeddings of the images of the request `request_id` (one `[tokens, hidden]` per image, in
        order); `generate()` / `prefill()` of that request takes them. Drop them if it never comes."""
        self._images[request_id] = embeddings

    def drop_image_embeddings(self, request_id: str) -> None:
        self._images.pop(request_id, None)

    # ---- KV hand-off (disaggregation) ----------------------------------------------------
    def import_kv(self, request_id: str, token_ids: list[int], first_token: int,
                  first_logprob: float | None = None, lora: str = "") -> ImportedKv:
        """Reserve blocks for a prompt's KV computed elsewhere; write them, then call generate().

        Raises EngineError(ErrorCode.OVERLOADED) when the blocks are not free now;
        `release(request_id)` gives them back if the transfer fails.
        """
        pool = self._pool()
        table = pool.allocate(token_ids, root=lora_root(lora))  # the adapter's own hash chain
        if table is None:
            raise EngineError(ErrorCode.OVERLOADED, "no free KV blocks for the imported prompt")
        imported = ImportedKv(request_id, list(table.block_ids), table.num_cached_tokens, first_token,
                              first_logprob, table, list(token_ids))
        self._imported[request_id] = imported
        return imported

    def cached_prompt_tokens(self, token_ids: list[int], lora: str = "") -> int:
        return 0 if self.pool is None else self.pool.cached_tokens(token_ids, lora_root(lora))

    def kv_tensors(self) -> list[torch.Tensor]:
        """One contiguous tensor per layer, `[num_blocks, 2, page_size, kv_heads, head_dim]`."""
        return self._runner().kv.tensors

    @property
    def bytes_per_block(self) -> int:
        """Bytes of one block in each tensor of kv_tensors() (block b starts at b * bytes_per_block)."""
        return self._runner().kv.bytes_per_block

    # ---- request life ------------------------------------------------------------------
    async def _run(self, seq: Sequence) -> AsyncIterator[OutputChunk]:
        sched = self._scheduler()
        if not seq.stream.done:
            enqueue(sched.waiting, seq)
            self._wake.set()
        try:
            async for chunk in seq.stream.chunks():
                yield chunk
        finally:
            if not seq.stream.done or (seq.table is not None and not seq.hold):
                self._release(seq)

    def _new_seq(self, request: EngineRequest, images_required: bool = True, mask: TokenMask | None = None
                 ) -> Sequence:
        try:
            seq = self._make_seq(request)
            seq.mask = mask
            attach_images(seq, self._images.get(request.request_id), self._runner(), images_required)
        finally:
            self._images.pop(request.request_id, None)
        return seq

    def _make_seq(self, request: EngineRequest) -> Sequence:
        n, stop = len(request.token_ids), request.stop
        room = len(self._scheduler().waiting) < self.cfg.max_waiting
        check_request(request, self._context_length, self._pool(), room)
        check_token_ids(request, int(self._runner().hf_config.vocab_size))
        stop_ids = frozenset(stop.stop_token_ids) | (frozenset() if stop.ignore_eos else self._runner().eos_ids)
        seq = Sequence(request=request, tokens=list(request.token_ids), prompt_len=n,
                       sampling=sampling_spec(request, self._runner().device), stop_ids=stop_ids)
        if request.output.prompt_logprobs is not None:
            seq.prompt = PromptLogprobs(n, request.output.prompt_logprobs)
        if request.lora:
            self.adapters.use(request.lora, seq)
        return seq

    def _seq_from_import(self, request: EngineRequest, imp: ImportedKv, mask: TokenMask | None) -> Sequence:
        try:  # the prompt's KV is computed already; the grammar takes the prefilled first token in _emit
            if request.output.prompt_logprobs is not None:
                raise EngineError(ErrorCode.BAD_REQUEST, "prompt logprobs are computed by an aggregated worker, "
                                  "not from KV prefilled elsewhere")
            seq = self._new_seq(request, images_required=False, mask=mask)
            if not self._pool().grow(imp.table, seq.prompt_len + 1):  # the first token's KV slot
                raise EngineError(ErrorCode.OVERLOADED, "no free KV block for the imported request's first token")
        except EngineError:
            self._pool().free(imp.table)
            raise
        seq.table, seq.admitted = imp.table, True
        seq.num_computed = seq.prompt_len
        seq.cached_tokens = imp.num_cached_tokens
        self._pool().commit(imp.table, seq.tokens)
        self._emit(seq, imp.first_token, imp.first_logprob if seq.sampling.logprobs is not None else None, None)
        return seq

    def _release(self, seq: Sequence) -> None:
        """Finish or abort: out of the queues now; blocks free now, or when the running step ends.

        Deferring matters only while a step writes into the blocks: import_kv could
        otherwise hand them to a transfer in the meantime.
        """
        seq.finished = True
        self.adapters.done(seq)
        if seq in self._in_step and seq.table is not None:
            self._deferred.append(seq.table)
            seq.table = None
        if self.scheduler is not None:
            self.scheduler.remove(seq)

    # ---- the step loop -----------------------------------------------------------------
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        sched, runner = self._scheduler(), self._runner()
        while True:
            batch = sched.schedule()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            for s in [s for s in batch if images_missing(s.seq, s.start, s.start + s.num_tokens)]:
                batch.remove(s)  # its prompt's KV was imported, then preempted: the images are not here
                s.seq.stream.fail(EngineError(ErrorCode.ENGINE_ERROR, "the request's images are needed again but gone"))
                self._release(s.seq)
            if not batch:
                continue
            items = [step_item(s) for s in batch]
            self._in_step = {s.seq for s in batch}
            try:
                out = await loop.run_in_executor(self._executor, runner.step, items)
            except Exception as exc:  # a failed step fails its requests, not the engine
                self._end_step()
                log.exception("step_failed", requests=len(batch))
                for s in batch:
                    s.seq.stream.fail(EngineError(ErrorCode.ENGINE_ERROR, f"model step failed: {exc}"))
                    self._release(s.seq)
                continue
            self._end_step()
            self._finish_step(batch, out)

    def _end_step(self) -> None:
        self._in_step = set()
        pool = self._pool()
        for table in self._deferred:
            pool.free(table)
        self._deferred.clear()

    def _finish_step(self, batch: list[Scheduled], out: SampleOutput | None) -> None:
        row = 0
        pool, ps = self._pool(), self.cfg.page_size
        for j, s in enumerate(batch):
            samples, seq = s.samples, s.seq
            i = row
            row += samples
            if seq.finished or seq.table is None or seq.num_computed != s.start:
                continue  # aborted or preempted while the step ran
            seq.num_computed = s.start + s.num_tokens
            if seq.num_computed // ps > len(seq.table.hashes):
                pool.commit(seq.table, seq.tokens[: seq.num_computed])
            if seq.prompt is not None and out is not None and j in out.prompt:
                seq.prompt.store(s.start, out.prompt[j])
            if samples and seq.request.stop.max_tokens == 0 and not seq.hold:
                self._prompt_only(seq)
            elif samples and out is not None:
                lp = out.logprobs[i] if out.logprobs is not None and seq.sampling.logprobs is not None else None
                self._emit(seq, out.tokens[i], lp, out.top[i])

    def _prompt_only(self, seq: Sequence) -> None:
        """max_tokens 0 (scoring a prompt): the prompt's logprobs, no token."""
        if seq.prompt is not None:
            seq.stream.prompt(seq.prompt.logprobs, seq.prompt.top)
        seq.stream.finish("length", Usage(seq.prompt_len, 0, seq.cached_tokens))
        self._release(seq)

    def _emit(self, seq: Sequence, token: int, logprob: float | None, top: list[TopLogprob] | None) -> None:
        if seq.prompt is not None and seq.generated == 0:
            seq.stream.prompt(seq.prompt.logprobs, seq.prompt.top)
        seq.tokens.append(token)
        seq.generated += 1
        seq.stream.push(token, logprob, top)
        reason: str | None = None
        if seq.mask is not None and (not seq.mask.accept(token) or seq.mask.done):
            reason = "stop"  # the grammar is complete (or, defensively, refused the token)
        elif token in seq.stop_ids and seq.generated >= seq.request.stop.min_tokens:
            reason = "stop"
        elif seq.generated >= seq.max_tokens or len(seq.tokens) >= self._context_length:
            reason = "length"
        if reason is None:
            return
        usage = Usage(seq.prompt_len, seq.generated, seq.cached_tokens)
        seq.stream.finish(reason, usage, token if reason == "stop" else None)
        if seq.hold:
            self._scheduler().running.remove(seq)
        else:
            self._release(seq)

    def _on_events(self, events: list[KvEvent]) -> None:
        if self._sink is not None:
            self._sink(events)

    # ---- typed accessors (the engine is usable only after start) -------------------------
    def _grammars(self) -> EngineGrammars:
        if self._grammar_cache is None:
            runner = self._runner()
            self._grammar_cache = EngineGrammars(self.cfg.model_path, int(runner.hf_config.vocab_size),
                                                 runner.eos_ids)
        return self._grammar_cache

    def _runner(self) -> ModelRunner:
        if self.runner is None:
            raise EngineError(ErrorCode.ENGINE_ERROR, "engine not started")
        return self.runner

    def _pool(self) -> BlockPool:
        if self.pool is None:
            raise EngineError(ErrorCode.ENGINE_ERROR, "engine not started")
        return self.pool

    def _scheduler(self) -> Scheduler:
        if self.scheduler is None:
            raise EngineError(ErrorCode.ENGINE_ERROR, "engine not started")
        return self.scheduler
