"""The diffusion engine: masked-diffusion LMs served by iterative unmasking, low-confidence remasking.

Each request grows by blocks: `block_length` mask tokens are appended to the
prompt (and to the blocks before), then denoised in `steps` iterations, each
unmasking the most confident predictions (shared/engine/diffusion/unmask.py).
A finished block is streamed as one chunk; the request ends at a stop token,
at max_tokens, or at the context length, reported as the reference engine
does (the stop token is the chunk's last token, `stop_reason` names it; usage
counts every streamed token).

Scheduling and all bookkeeping stay on the event loop; each iteration's
forward and unmasking run in one dedicated thread. Every running request is
denoised in the same iteration (one padded batch of at most
`max_batched_tokens` tokens, taken round-robin when they do not all fit), so
requests of any length progress together. An aborted request leaves the
queues at once; an iteration already running for it is ignored when it ends.

No KV cache and no prefix cache: with bidirectional attention every committed
token changes every position, so each iteration recomputes the whole
sequence. The engine therefore publishes no KV events; its load is requests
running and waiting (no blocks).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import structlog
import torch

from protocol.discovery import RuntimeConfig
from protocol.messages import EngineRequest, ErrorCode, OutputChunk, Usage
from shared.engine.base import Engine, EngineError, EngineLoad, refuse_prompt_logprobs
from shared.engine.diffusion.config import DiffusionConfig, DllmSettings, resolve_settings
from shared.engine.diffusion.model import BidirectionalLM
from shared.engine.diffusion.runner import StepItem, denoise
from shared.engine.diffusion.state import DiffusionRequest, block_output
from shared.engine.diffusion.unmask import Commit
from shared.model.diffusion import read_diffusion_defaults
from shared.runtime.tasks import cancel_and_wait

log = structlog.get_logger(__name__)


class DiffusionEngine(Engine):
    name = "diffusion"

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.model: BidirectionalLM | None = None
        self.settings: DllmSettings | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffusion-step")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiting: deque[DiffusionRequest] = deque()
        self._running: list[DiffusionRequest] = []
        self._turn = 0  # round-robin start when a batch cannot hold every running request
        self.iterations = 0  # batched forwards run so far (a benchmark's and a test's view)
        self._context_length = 0

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        self.model = model = await loop.run_in_executor(self._executor, BidirectionalLM, cfg.model_path,
                                                        cfg.device, cfg.dtype)
        try:
            self.settings = s = resolve_settings(cfg, read_diffusion_defaults(cfg.model_path), model.vocab_size)
        except ValueError as e:
            raise EngineError(ErrorCode.BAD_REQUEST, str(e)) from e
        limit = model.max_position
        self._context_length = min(cfg.context_length, limit) if cfg.context_length > 0 else limit
        warm = StepItem([0, s.mask_token_id], 1, [s.mask_token_id], 1, None, 0.0, None, [], 0)
        await loop.run_in_executor(self._executor, denoise, model, [warm], s.mask_token_id)
        self._task = asyncio.create_task(self._loop(), name="diffusion-engine")
        log.info("engine_ready", engine=self.name, model=cfg.model_path, device=str(model.device),
                 mask_token_id=s.mask_token_id, block_length=s.block_length, steps=s.steps, threshold=s.threshold)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        for req in [*self._running, *self._waiting]:
            req.stream.fail(EngineError(ErrorCode.ENGINE_ERROR, "engine stopped"))
            self._drop(req)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- Engine interface --------------------------------------------------------------
    def runtime_config(self) -> RuntimeConfig:
        """No KV blocks; `page_size` is the block length, the unit a diffusion request grows by."""
        block = self.settings.block_length if self.settings else (self.cfg.block_length or 0)
        return RuntimeConfig(total_kv_blocks=0, page_size=block or 1, max_running_requests=self.cfg.max_running,
                             max_batched_tokens=self.cfg.max_batched_tokens,
                             max_waiting_requests=self.cfg.max_waiting)

    def context_length(self) -> int:
        return self._context_length

    def load(self) -> EngineLoad:
        return EngineLoad(running=len(self._running), waiting=len(self._waiting))

    async def generate(self, request: EngineRequest) -> AsyncIterator[OutputChunk]:
        req = self._new_request(request)
        async with contextlib.aclosing(self._run(req)) as chunks:  # closed (and aborted) with us
            async for chunk in chunks:
                yield chunk

    # ---- request life ------------------------------------------------------------------
    async def _run(self, req: DiffusionRequest) -> AsyncIterator[OutputChunk]:
        if not req.stream.done:
            self._waiting.append(req)
            self._wake.set()
        try:
            async for chunk in req.stream.chunks():
                yield chunk
        finally:
            if not req.finished:
                self._drop(req)

    def _new_request(self, request: EngineRequest) -> DiffusionRequest:
        model, n, stop = self._model(), len(request.token_ids), request.stop
        refuse_prompt_logprobs(request, self.name)
        if n == 0:
            raise EngineError(ErrorCode.BAD_REQUEST, "empty prompt")
        if n + stop.max_tokens > self._context_length:
            raise EngineError(ErrorCode.CONTEXT_LENGTH, f"{n} prompt + {stop.max_tokens} new tokens exceed "
                              f"the context length {self._context_length}")
        if any(t < 0 or t >= model.vocab_size for t in request.token_ids):
            raise EngineError(ErrorCode.BAD_REQUEST, f"token id out of the vocabulary (0..{model.vocab_size - 1})")
        if len(self._waiting) >= self.cfg.max_waiting:
            raise EngineError(ErrorCode.OVERLOADED, "engine queue full")
        s = request.sampling
        temperature = 0.0 if s.top_k == 1 else max(0.0, s.temperature)
        gen = None
        if s.seed is not None and temperature > 0:
            gen = torch.Generator(device=model.device).manual_seed(s.seed)
        stop_ids = frozenset(stop.stop_token_ids) | (frozenset() if stop.ignore_eos else model.eos_ids)
        req = DiffusionRequest(request=request, tokens=list(request.token_ids), prompt_len=n,
                               limit=stop.max_tokens, stop_ids=stop_ids, temperature=temperature, generator=gen)
        if req.limit <= 0:
            self._finish(req, "length", None)
        return req

    def _drop(self, req: DiffusionRequest) -> None:
        """Out of the queues now (finished or aborted)."""
        req.finished = True
        with contextlib.suppress(ValueError):
            self._running.remove(req)
        with contextlib.suppress(ValueError):
            self._waiting.remove(req)

    def _finish(self, req: DiffusionRequest, reason: str, stop_reason: int | None) -> None:
        req.stream.finish(reason, Usage(req.prompt_len, req.generated, 0), stop_reason)
        self._drop(req)

    # ---- the iteration loop ------------------------------------------------------------
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        model, s = self._model(), self._settings()
        while True:
            self._admit()
            batch = self._pick()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            items = [self._item(r) for r in batch]
            try:
                commits = await loop.run_in_executor(self._executor, denoise, model, items, s.mask_token_id)
                self.iterations += 1
            except Exception as exc:  # a failed iteration fails its requests, not the engine
                log.exception("step_failed", requests=len(batch))
                for r in batch:
                    if not r.finished:
                        r.stream.fail(EngineError(ErrorCode.ENGINE_ERROR, f"model step failed: {exc}"))
                        self._drop(r)
                continue
            for r, c in zip(batch, commits, strict=True):
                if not r.finished:  # else aborted while the iteration ran
                    self._apply(r, c)

    def _admit(self) -> None:
        s = self._settings()
        while self._waiting and len(self._running) < self.cfg.max_running:
            req = self._waiting.popleft()
            self._start_block(req, s)
            self._running.append(req)

    def _start_block(self, req: DiffusionRequest, s: DllmSettings) -> None:
        length = min(s.block_length, self._context_length - len(req.tokens))
        req.next_block(length, s.mask_token_id, s.steps)

    def _pick(self) -> list[DiffusionRequest]:
        """Running requests for this iteration: all that fit in max_batched_tokens (padded), round-robin."""
        n = len(self._running)
        if n == 0:
            return []
        start = self._turn % n
        self._turn += 1
        batch: list[DiffusionRequest] = []
        width = 0
        for r in self._running[start:] + self._running[:start]:
            w = max(width, len(r.tokens) + len(r.block.tokens if r.block else []))
            if batch and w * (len(batch) + 1) > self.cfg.max_batched_tokens:
                continue
            batch.append(r)
            width = w
        return batch

    def _item(self, r: DiffusionRequest) -> StepItem:
        blk = r.block
        assert blk is not None
        s = self._settings()
        return StepItem(token_ids=[*r.tokens, *blk.tokens], block_start=blk.start, block=list(blk.tokens),
                        k=blk.k(), threshold=s.threshold, temperature=r.temperature, generator=r.generator,
                        banned=sorted(r.stop_ids), banned_rows=r.banned_rows())

    def _apply(self, r: DiffusionRequest, commit: Commit) -> None:
        blk = r.block
        assert blk is not None
        blk.commit(commit)
        if not blk.done:
            return
        out = block_output(r, blk)
        want_lp = r.request.output.logprobs is not None
        for tok, lp in zip(out.tokens, out.logprobs, strict=True):
            r.tokens.append(tok)
            r.stream.push(tok, lp if want_lp else None)
        if out.finish_reason is not None:
            self._finish(r, out.finish_reason, out.stop_reason)
        elif len(r.tokens) >= self._context_length:
            self._finish(r, "length", None)
        else:
            self._start_block(r, self._settings())

    # ---- typed accessors (the engine is usable only after start) -------------------------
    def _model(self) -> BidirectionalLM:
        if self.model is None:
            raise EngineError(ErrorCode.ENGINE_ERROR, "engine not started")
        return self.model

    def _settings(self) -> DllmSettings:
        if self.settings is None:
            raise EngineError(ErrorCode.ENGINE_ERROR, "engine not started")
        return self.settings
