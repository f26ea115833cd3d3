"""The SGLang engine adapter: `sglang.Engine` in this process, behind shoal's Engine interface.

    engine = SglangEngine(build_sglang_config(extra_args, model_path=path))
    await engine.start()          # returns once SGLang's scheduler is up and warmed
    async for chunk in engine.generate(request): ...

sglang is imported inside start(), so importing shoal never needs it. The
engine is built in a thread (it blocks for the whole model load); its
output loop then runs in our event loop, started here without the SIGTERM
and SIGQUIT handlers SGLang would install, so the worker's own drain on
SIGTERM keeps working. Disaggregation: a request with `bootstrap` set
carries SGLang's bootstrap host/port/room to `async_generate` on both
sides (see docs/SGLANG.md for who starts which half, and when). With
SGLang's `--is-embedding` the engine serves `embed()` instead (see embedding.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from protocol.discovery import RuntimeConfig
from protocol.messages import EngineRequest, ErrorCode, OutputChunk, StopConditions
from shared.engine.base import Engine, EngineError, EngineLoad, KvEventSink, KvHandoff, check_embed_inputs
from shared.engine.sglang import lora as sglang_lora
from shared.engine.sglang.args import SglangConfig, to_server_args
from shared.engine.sglang.embedding import encode, is_embedding, l2_normalize
from shared.engine.sglang.events import KvEventSubscriber
from shared.engine.sglang.info import load_from_snapshots, runtime_config
from shared.engine.sglang.lora import adapter_name_of, adapters_of
from shared.engine.sglang.mapping import OutputCursor, error_from_exception, generate_kwargs
from shared.engine.sglang.scoring import cross_encode
from shared.engine.sglang.translate import BlockHashTranslator
from shared.engine.sglang.warmup import warmup_plan
from shared.engine.sglang.wire import WireBatch
from shared.telemetry.logging import get_logger

T = TypeVar("T")
log = get_logger("shoal.sglang")

PROMETHEUS_ENV = "PROMETHEUS_MULTIPROC_DIR"
STATE_TIMEOUT_S = 60.0


class SglangEngine(Engine):
    name = "sglang"
    accepts_images = True  # SGLang's own multimodal processor takes them by URL (a text model refuses them)

    def __init__(self, cfg: SglangConfig) -> None:
        self.cfg = cfg
        self.sgl: Any = None  # sglang.Engine once started
        self._runtime = RuntimeConfig(page_size=cfg.page_size, disaggregation_mode=cfg.disaggregation_mode)
        self._context_length = 4096
        self._sink: KvEventSink | None = None
        self._subscribers: list[KvEventSubscriber] = []
        self._translators: dict[int, BlockHashTranslator] = {}
        self._output_task: asyncio.Task[None] | None = None
        self._failure: EngineError | None = None
        self._inflight = 0
        self.embedding = is_embedding(cfg.argv)
        self.adapters = adapters_of(cfg.argv)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        _ensure_metrics_dir(self.cfg)
        server_args = await asyncio.to_thread(to_server_args, self.cfg)
        self.sgl = await asyncio.to_thread(_launch, server_args)
        self._start_output_loop()
        tm = self.sgl.tokenizer_manager
        self._context_length = int(getattr(tm, "context_len", 0) or self._context_length)
        state = await self._internal_state()
        info = self.sgl._scheduler_init_result.scheduler_infos[0]
        self._runtime = runtime_config(self.cfg, state, info)
        await self._subscribe_kv_events()
        if self.embedding:
            await self.embed([[1] * 8])
        elif self.cfg.disaggregation_mode == "null":
            await self._warm_up()
        log.info("sglang_ready", runtime=str(self._runtime), context_length=self._context_length)

    async def stop(self) -> None:
        for sub in self._subscribers:
            await sub.stop()
        self._subscribers.clear()
        if self._output_task is not None:
            self._output_task.cancel()
            await asyncio.gather(self._output_task, return_exceptions=True)
        if self.sgl is not None:
            await asyncio.to_thread(self.sgl.shutdown)
            self.sgl = None

    def runtime_config(self) -> RuntimeConfig:
        return self._runtime

    def context_length(self) -> int:
        return self._context_length

    def bootstrap_address(self) -> tuple[str, int]:
        return self._runtime.bootstrap_host, self._runtime.bootstrap_port

    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        self._sink = sink

    def load(self) -> EngineLoad:
        reader = getattr(getattr(self.sgl, "tokenizer_manager", None), "load_snapshot_reader", None)
        if reader is not None:
            with contextlib.suppress(Exception):
                snapshots = reader.read_all()
                if snapshots:
                    return load_from_snapshots(snapshots, self._runtime.page_size)
        return EngineLoad(running=self._inflight, kv_total_blocks=self._runtime.total_kv_blocks)

    # ---- LoRA adapters (SGLang's; shoal tracks names) ----------------------------------------
    def lora_names(self) -> list[str]:
        return self.adapters.names()

    async def load_lora(self, name: str, path: str) -> None:
        await sglang_lora.load(self.sgl.tokenizer_manager, self.adapters, name, path)

    async def unload_lora(self, name: str) -> None:
        await sglang_lora.unload(self.sgl.tokenizer_manager, self.adapters, name)

    # ---- requests ----------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> AsyncIterator[OutputChunk]:
        self._check(request)
        if request.lora:
            self.adapters.use(request.lora, request.request_id)
        cursor = OutputCursor(self.cfg.incremental_output, prompt_logprobs=request.output.prompt_logprobs)
        stream: Any = None
        finished = False
        self._inflight += 1
        try:
            with self._mapped_errors():
                stream = await self.sgl.async_generate(**generate_kwargs(request))
                async for item in stream:
                    chunk = cursor.chunk(item)
                    finished = chunk.finish_reason is not None
                    if chunk.token_ids or finished or chunk.prompt_logprobs is not None:
                        yield chunk
                    if finished:
                        break
        finally:
            self._inflight -= 1
            self.adapters.done(request.request_id)
            if not finished:
                self._abort(request.request_id)
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.aclose()

    async def embed(self, inputs: list[list[int]], normalize: bool = True) -> list[list[float]]:
        """SGLang's pooled embeddings (its pooler may have normalised them already; normalising twice is a no-op)."""
        if not self.embedding:
            raise EngineError(ErrorCode.BAD_REQUEST, "this SGLang engine does not serve embeddings "
                              "(start it with SGLang's --is-embedding)")
        self._check_running()
        check_embed_inputs(inputs, self._context_length)
        vectors = await self._batch("embed", len(inputs), lambda rids: encode(self.sgl, inputs, rids))
        if len(vectors) != len(inputs):
            raise EngineError(ErrorCode.ENGINE_ERROR, f"SGLang returned {len(vectors)} embeddings "
                              f"for {len(inputs)} inputs")
        return [l2_normalize(v) for v in vectors] if normalize else vectors

    async def _batch(self, kind: str, n: int, call: Callable[[list[str]], Awaitable[list[T]]]) -> list[T]:
        """One SGLang call for `n` inputs under request ids of their own, counted in flight; the ids are
        aborted when the call does not finish (a client left, an error)."""
        rids = [f"shoal-{kind}-{secrets.token_hex(8)}" for _ in range(n)]
        done = False
        self._inflight += 1
        try:
            with self._mapped_errors():
                out = await call(rids)
                done = True
        finally:
            self._inflight -= 1
            if not done:
                for rid in rids:
                    self._abort(rid)
        return out

    async def score(self, inputs: list[list[int]], token_type_ids: list[list[int]],
                    texts: list[list[str]] | None = None) -> list[float]:
        """Cross-encoder scores by SGLang's own rerank path (shared.engine.sglang.scoring): the pairs' texts."""
        if not self.embedding:
            raise EngineError(ErrorCode.BAD_REQUEST, "this SGLang engine does not score pairs (start a "
                              "sequence-classification model with SGLang's --is-embedding)")
        if not texts or len(texts) != len(inputs):
            raise EngineError(ErrorCode.BAD_REQUEST, "SGLang scores pairs from their texts; the request has none")
        self._check_running()
        scores = await self._batch("score", len(texts), lambda rids: cross_encode(self.sgl, texts, rids))
        if len(scores) != len(texts):
            raise EngineError(ErrorCode.ENGINE_ERROR, f"SGLang returned {len(scores)} scores for {len(texts)} pairs")
        return scores

    async def prefill(self, request: EngineRequest) -> KvHandoff:
        """Disaggregated prefill: run the prompt, hand its KV to the decode side over SGLang's bootstrap.

        Returns once SGLang has sent the KV, which needs the decode side's
        generate() with the same bootstrap room to be running at the same time.
        """
        if self.cfg.disaggregation_mode != "prefill":
            raise EngineError(ErrorCode.BAD_REQUEST, "this SGLang engine is not a prefill engine")
        first: int | None = None
        first_logprob: float | None = None
        async with contextlib.aclosing(self.generate(request)) as chunks:
            async for chunk in chunks:
                if chunk.token_ids and first is None:
                    first = chunk.token_ids[0]
                    first_logprob = chunk.logprobs[0] if chunk.logprobs else None
        assert request.bootstrap is not None
        b = request.bootstrap
        return KvHandoff(request_id=request.request_id, block_ids=[], num_tokens=len(request.token_ids),
                         first_token=-1 if first is None else first, first_logprob=first_logprob,
                         extra={"bootstrap_host": b.host, "bootstrap_port": str(b.port),
                                "bootstrap_room": str(b.room)})

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """SGLang's exceptions as EngineErrors: the engine's own failure when it has died, else mapped."""
        try:
            yield
        except EngineError:
            raise
        except Exception as e:
            raise (self._failure or error_from_exception(e)) from e

    def _check_running(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self.sgl is None:
            raise EngineError(ErrorCode.ENGINE_ERROR, "SGLang engine not started")

    def _check(self, request: EngineRequest) -> None:
        self._check_running()
        if self.embedding:
            raise EngineError(ErrorCode.BAD_REQUEST, "this SGLang engine serves embeddings (--is-embedding), "
                              "not generation")
        if not request.token_ids:
            raise EngineError(ErrorCode.BAD_REQUEST, "empty prompt")
        if self.cfg.disaggregation_mode != "null" and request.bootstrap is None:
            raise EngineError(ErrorCode.BAD_REQUEST, f"a {self.cfg.disaggregation_mode} engine needs the "
                              "request's bootstrap host, port and room")

    def _abort(self, rid: str) -> None:
        tm = getattr(self.sgl, "tokenizer_manager", None)
        if tm is not None:
            with contextlib.suppress(Exception):
                tm.abort_request(rid)

    # ---- start-up helpers --------------------------------------------------------------------
    def _start_output_loop(self) -> None:
        """Run SGLang's output loop here without its signal handlers (the worker drains on SIGTERM itself)."""
        tm = self.sgl.tokenizer_manager
        if getattr(tm, "event_loop", None) is not None:
            return
        known = all(hasattr(tm, a) for a in ("handle_loop", "asyncio_tasks", "event_loop"))
        if not known or threading.current_thread() is not threading.main_thread():
            tm.auto_create_handle_loop()  # off the main thread SGLang installs no signal handlers anyway
            if not known:
                log.warning("sglang_signal_handlers_kept", reason="unknown TokenizerManager layout")
            return
        loop = asyncio.get_running_loop()
        self._output_task = loop.create_task(self._guard(tm.handle_loop()), name="sglang-output-loop")
        tm.asyncio_tasks.add(self._output_task)
        tm.event_loop = loop

    async def _guard(self, loop_coro: Coroutine[Any, Any, None]) -> None:
        try:
            await loop_coro
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._failure = EngineError(ErrorCode.ENGINE_ERROR, f"SGLang output loop failed: {e!r}")
            log.exception("sglang_output_loop_failed")

    async def _internal_state(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(STATE_TIMEOUT_S):
                states = await self.sgl.tokenizer_manager.get_internal_state()
            return dict(states[0]) if states else {}
        except Exception as e:
            log.warning("sglang_internal_state_unavailable", error=repr(e))
            return dataclasses.asdict(self.sgl.server_args)

    async def _subscribe_kv_events(self) -> None:
        if self.cfg.kv_events is None:
            log.warning("sglang_kv_events_off", reason="no zmq --kv-events-config; the router sees no cache")
            return
        for rank in range(self._runtime.dp_size):
            self._translators[rank] = BlockHashTranslator(
                self._runtime.page_size, lambda lora_id: adapter_name_of(self.sgl.tokenizer_manager, lora_id))
            sub = KvEventSubscriber(self.cfg.kv_events, self._on_batch_of(rank), dp_rank=rank)
            await sub.start()
            self._subscribers.append(sub)

    def _on_batch_of(self, rank: int) -> Any:
        def on_batch(batch: WireBatch) -> None:
            events = self._translators[rank].translate(batch.events)
            if events and self._sink is not None:
                self._sink(events, rank)

        return on_batch

    async def _warm_up(self) -> None:
        """Run the shapes users hit first (warmup.py) before the worker registers, then empty the prefix cache."""
        t0 = time.monotonic()
        vocab = int(getattr(self.sgl.tokenizer_manager.model_config, "vocab_size", 0) or 32000)
        plan = warmup_plan(self._context_length, vocab)
        stop = StopConditions(max_tokens=plan.max_tokens, ignore_eos=True)

        async def run(ids: list[int]) -> None:
            req = EngineRequest(request_id=f"shoal-warmup-{secrets.token_hex(6)}", token_ids=ids, stop=stop)
            async with contextlib.aclosing(self.generate(req)) as chunks:
                async for _ in chunks:
                    pass

        for ids in plan.singles:
            await run(ids)
        await asyncio.gather(*(run(ids) for ids in plan.batch))
        await asyncio.gather(*(run(ids) for ids in plan.repeats))
        with contextlib.suppress(Exception):
            await self.sgl.tokenizer_manager.flush_cache()
        log.info("sglang_warmed_up", seconds=round(time.monotonic() - t0, 2), requests=plan.requests())


def _launch(server_args: Any) -> Any:
    import sglang

    return sglang.Engine(server_args=server_args)


def _ensure_metrics_dir(cfg: SglangConfig) -> None:
    """With --enable-metrics SGLang's processes write Prometheus files; make the folder known before they start."""
    if cfg.enable_metrics and PROMETHEUS_ENV not in os.environ:
        os.environ[PROMETHEUS_ENV] = tempfile.mkdtemp(prefix="shoal-sglang-metrics-")
        log.info("prometheus_multiproc_dir", path=os.environ[PROMETHEUS_ENV])
