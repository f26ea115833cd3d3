"""One request pipeline for every front door: plan -> prepare -> dispatch -> a stream of typed steps.

    job = await pipeline.prepare(body, headers, "chatcmpl")  # plan + tokenize once + the EngineRequest once
    run = await pipeline.start(job)      # every choice's first output is in (or Failed: 429, 503, 502 ...)
    run.worker                           # the x-shoal-worker header
    async for frame in run.frames():     # steps (services.frontend.steps); the last frame is the usage
        ...

`n` choices are `n` engine requests (`fan_out`); n = 1 is the case of one. The TTFT metric,
the trace span, the worker header, admission, the early 429/503 and the request gate's checks
(services.frontend.limits: token ids, prompt and grammar bytes, user, priority, instance ids)
happen here, so every front door (chat, completions, Responses, Anthropic Messages) and every
n get them alike.
Front doors raise `Failed` (an `ErrorStep`) for anything refused before the first token.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import msgspec

from protocol.messages import HTTP_STATUS, EngineRequest, ErrorCode, OutputChunk, Usage
from services.frontend.admission_hook import with_admission
from services.frontend.agents import AgentPlan, plan_chat
from services.frontend.cold_start import ColdStart
from services.frontend.dispatch import Dispatcher
from services.frontend.limits import RequestGate
from services.frontend.models import ModelEntry, ModelRegistry, resolve
from services.frontend.openai_types import ChatCompletionRequest, CompletionRequest
from services.frontend.options import FrontendOptions
from services.frontend.output import ChoiceOutput
from services.frontend.preprocess import Prepared, prepare
from services.frontend.session import SESSION_HEADER, session_id
from services.frontend.steps import ErrorStep, Frame, UsageStep
from shared.errors import ShoalError, client_message
from shared.parsers.detect import resolve_parsers
from shared.routing.session_key import prefix_session
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import histogram
from shared.telemetry.tracing import inject_headers, span

log = get_logger("shoal.frontend")
TTFT = histogram("shoal_frontend_ttft_seconds", "Time to first token", [],
                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
GenerateRequest = ChatCompletionRequest | CompletionRequest


class Failed(Exception):
    """The request is refused or failed before its first token: the front door answers `step` in its shape."""

    def __init__(self, step: ErrorStep) -> None:
        super().__init__(step.message)
        self.step = step


def error_step(e: ShoalError) -> ErrorStep:
    """The failure as clients may read it: internal and engine errors in generic words (shared.errors
    .client_message), their details in the log."""
    status = HTTP_STATUS.get(e.code, 500)
    retry = e.retry_after if e.retry_after is not None else (1.0 if status in (429, 503) else None)
    message = client_message(e.code, e.message)
    if message != e.message:
        log.warning("request_failed", code=e.code.value, detail=e.message[:2000])
    return ErrorStep(status, e.code.value, message, retry, getattr(e, "param", None))


def refused(status: int, message: str, code: str, param: str | None = None,
            retry_after: float | None = None) -> Failed:
    return Failed(ErrorStep(status, code, message, retry_after, param))


class Job(msgspec.Struct, frozen=True):
    """A request ready to run: its model, its one EngineRequest and how its output is read (a Struct: cheap to
    build; it never leaves the process)."""

    model: ModelEntry
    request: EngineRequest
    prepared: Prepared
    plan: AgentPlan | None
    n: int
    instance: str | None  # router mode direct: the worker the client named
    user: str | None

    @property
    def request_id(self) -> str:
        return self.request.request_id


def fan_out(request: EngineRequest, n: int) -> list[EngineRequest]:
    """One engine request per choice: its own id, and its own seed when the client gave one."""
    if n == 1:
        return [request]
    seed = request.sampling.seed
    return [msgspec.structs.replace(
        request, request_id=f"{request.request_id}-{i}",
        sampling=msgspec.structs.replace(request.sampling, seed=None if seed is None else seed + i))
        for i in range(n)]


class Pipeline:
    def __init__(self, registry: ModelRegistry, dispatcher: Dispatcher, opts: FrontendOptions) -> None:
        self.registry, self.dispatcher, self.opts = registry, dispatcher, opts
        self.gate = RequestGate(opts.limits, opts.api_key)  # services.frontend.limits: what clients may send
        self.cold_start: ColdStart | None = None  # scale from zero: main.py sets it (services.frontend.cold_start)

    # ---- plan + prepare --------------------------------------------------------------------------
    async def prepare(self, body: GenerateRequest, headers: Mapping[str, str], prefix: str) -> Job:
        model, lora = resolve(self.registry.models, body.model)
        if model is None:
            raise refused(404, f"The model `{body.model}` does not exist.", "model_not_found", "model")
        if model.is_scorer:
            raise refused(400, f"The model `{body.model}` is a cross-encoder; it serves /v1/rerank and /v1/score, "
                               "not chat or completions.", "model_not_generative", "model")
        if model.is_embedding:
            raise refused(400, f"The model `{body.model}` is an embedding model; it serves /v1/embeddings, "
                               "not chat or completions.", "model_not_generative", "model")
        if not model.candidates(lora):
            if self.cold_start is not None:  # a parked model: a worker starts, or 503
                if (waited := await self.cold_start.wait(model, lora)) is not None:
                    raise Failed(waited)
            if not model.candidates(lora):
                raise refused(503, f"no worker is serving model {body.model!r} right now", "no_workers",
                              retry_after=1.0)
        if not self.dispatcher.has_room():
            raise refused(429, "too many requests in flight; retry later", "overloaded", retry_after=1.0)
        instance = headers.get(self.opts.direct_header) if self.opts.direct else None
        if self.opts.direct and not instance:
            raise refused(400, f"router mode is direct: send the worker in header {self.opts.direct_header}",
                          "invalid_request")
        if instance and (bad := self.gate.instance(instance, self.opts.direct_header)) is not None:
            raise Failed(bad)  # before the id goes near a NATS subject
        try:
            # token ids in the vocabulary, prompt and grammar bytes, user length, priority: before any work
            context_length = model.context_length
            body = self.gate.request(body, model.tokenizer.vocab_size, context_length, self.opts.max_prompt_tokens)
            plan = await self._plan(body, model)
            prepared = await prepare(model.tokenizer, body, f"{prefix}-{secrets.token_hex(12)}",
                                     context_length, self.opts.max_prompt_tokens, model.image_input,
                                     grammar=plan.grammar if plan else None, lora=lora,
                                     session=session_id(headers.get(SESSION_HEADER)) or prefix_session(
                                         getattr(body, "messages", None), self.opts.session_from) or "")
            prepared.request = with_admission(prepared.request, headers, self.opts.tenant_header, body.timeout)
        except ShoalError as e:
            raise Failed(error_step(e)) from e
        if body.user is not None:
            log.info("request_user", request_id=prepared.request.request_id, user=body.user)
        return Job(model, prepared.request, prepared, plan, body.n, instance, body.user)

    async def _plan(self, body: GenerateRequest, model: ModelEntry) -> AgentPlan | None:
        """Tools, reasoning and structured output (chat); the grammar compiles or the request is a 400."""
        if not isinstance(body, ChatCompletionRequest):
            return None
        tool_parser, reasoning_parser = resolve_parsers(self.opts.tool_call_parser or model.tool_call_parser,
                                                        self.opts.reasoning_parser or model.reasoning_parser,
                                                        model.tokenizer)  # `auto`: from the chat template
        plan = plan_chat(body, tool_parser, reasoning_parser)
        await plan.check(model.tokenizer)
        return plan

    # ---- dispatch --------------------------------------------------------------------------------
    async def start(self, job: Job) -> Run:
        """Send every choice; return once each has its first output (a failure before that is `Failed`)."""
        release = self.dispatcher.admit()
        if release is None:
            raise refused(429, "too many requests in flight; retry later", "overloaded", retry_after=1.0)
        started = time.monotonic()
        attributes: dict[str, str | int] = {"request_id": job.request_id, "model": job.model.name,
                                            "prompt_tokens": len(job.request.token_ids), "n": job.n}
        if job.user is not None:
            attributes["user"] = job.user  # OpenAI's end-user id, for tracing abuse back
        served: list[dict[str, str]] = [{} for _ in range(job.n)]
        with span("frontend.request", attributes=attributes):
            streams = [self.dispatcher.stream(job.model, r, job.instance, inject_headers({}), served[i])
                       for i, r in enumerate(fan_out(job.request, job.n))]
        try:
            firsts = await _firsts(streams, started)
        except BaseException as e:
            release()
            for s in streams:
                with contextlib.suppress(Exception):
                    await s.aclose()  # type: ignore[attr-defined]
            if isinstance(e, ShoalError):
                raise Failed(error_step(e)) from e
            if isinstance(e, StopAsyncIteration):
                raise refused(502, "the worker ended the stream without output", ErrorCode.WORKER_LOST.value) from e
            raise
        worker = served[0].get("instance_id", "") if job.n == 1 else \
            ",".join(dict.fromkeys(s.get("instance_id", "") for s in served))
        return Run(job, streams, firsts, release, worker)


async def _firsts(streams: list[AsyncIterator[list[OutputChunk]]], started: float) -> list[list[OutputChunk]]:
    """The first batch of every stream; TTFT is the time to the earliest."""
    if len(streams) == 1:
        first = await anext(streams[0])
        TTFT.observe(time.monotonic() - started)
        return [first]
    stamps: list[float] = []

    async def first(s: AsyncIterator[list[OutputChunk]]) -> list[OutputChunk]:
        item = await anext(s)
        stamps.append(time.monotonic())
        return item

    tasks = [asyncio.create_task(first(s)) for s in streams]
    try:
        out = await asyncio.gather(*tasks)
    finally:
        await cancel_and_wait(*tasks)
    TTFT.observe(min(stamps) - started)
    return list(out)


class Run:
    """A started request: its choices' outputs as frames of steps, then the usage (or an ErrorStep)."""

    __slots__ = ("firsts", "job", "outputs", "release", "streams", "worker")

    def __init__(self, job: Job, streams: list[AsyncIterator[list[OutputChunk]]], firsts: list[list[OutputChunk]],
                 release: Callable[[], None], worker: str) -> None:
        self.job, self.streams, self.firsts, self.release, self.worker = job, streams, firsts, release, worker
        p, tok = job.prepared, job.model.tokenizer
        asked = job.request.output.prompt_logprobs  # echo with logprobs: the prompt's logprobs first
        prompt = (list(job.request.token_ids), asked) if asked is not None else None
        self.outputs = [ChoiceOutput(tok, i, p.stops, p.logprobs is not None,
                                     job.plan.new_parser(p.prompt_text) if job.plan is not None else None, prompt)
                        for i in range(job.n)]

    def usage(self, outputs: list[ChoiceOutput] | None = None) -> Usage:
        outs = self.outputs if outputs is None else outputs
        return Usage(self.job.prepared.prompt_tokens, sum(o.completion_tokens for o in outs),
                     self.outputs[0].cached_tokens)

    async def frames(self) -> AsyncIterator[Frame]:
        """Every choice's frames (interleaved as they come), then [UsageStep]; a failure ends with [ErrorStep]."""
        tasks: list[asyncio.Task[None]] = []
        try:
            if len(self.outputs) == 1:  # inline: one generator less per frame on the common path
                out, continuous, stream = self.outputs[0], self.job.prepared.continuous_usage, self.streams[0]
                items: list[OutputChunk] | None = self.firsts[0]
                while items is not None:
                    frame = out.feed(items)
                    if continuous:
                        frame.append(UsageStep(self.usage([out]), running=True))
                    if frame:
                        yield frame
                    if out.finish_reason is not None:
                        break
                    items = await anext(stream, None)
            else:
                async for frame in self._merged(tasks):
                    yield frame
            yield [UsageStep(self.usage())]
        except ShoalError as e:
            yield [error_step(e)]
        finally:
            self.release()
            await cancel_and_wait(*tasks)
            for s in self.streams:
                with contextlib.suppress(Exception):
                    await s.aclose()  # type: ignore[attr-defined]

    async def _choice(self, i: int) -> AsyncIterator[Frame]:
        out, continuous = self.outputs[i], self.job.prepared.continuous_usage
        items: list[OutputChunk] | None = self.firsts[i]
        while items is not None:
            frame = out.feed(items)
            if continuous:
                frame.append(UsageStep(self.usage([out]), running=True, choice=i))
            if frame:
                yield frame
            if out.finish_reason is not None:
                return
            items = await anext(self.streams[i], None)

    async def _merged(self, tasks: list[asyncio.Task[None]]) -> AsyncIterator[Frame]:
        # bounded: a slow client holds the pumps back, and the workers merge tokens into fewer frames
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * len(self.outputs))

        async def pump(i: int) -> None:
            try:
                async for frame in self._choice(i):
                    await queue.put(frame)
                await queue.put(None)
            except ShoalError as e:
                await queue.put(e)

        tasks.extend(asyncio.create_task(pump(i)) for i in range(len(self.outputs)))
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, ShoalError):
                raise item
            else:
                yield item
