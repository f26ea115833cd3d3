"""The decode half of a disaggregated pair (`--disaggregation-mode decode`, reference engine).

Per request: reserve blocks (`import_kv`), ask a prefill worker to compute the
prompt and write its KV into them over NIXL, wait for the write's notification,
then decode from the imported KV. A failed or timed-out transfer is tried once
more on another prefill worker, then ends the request with `transfer_failed`
(or prefills locally with `--disagg-fallback-local`). A short or mostly cached prompt,
or any prompt while every prefill worker is busy, is prefilled here instead (prefill_path.py). Blocks are freed on every
path; when a prefill worker might still be writing into them (the call was
cancelled or the worker lost), only after its `done`/`abort` notification or
the transfer timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec

from protocol.messages import BootstrapInfo, EngineRequest, ErrorCode, OutputChunk
from services.worker.args import WorkerConfig
from services.worker.role import Role
from services.worker.roles.aggregated import GenerateHandler
from services.worker.roles.prefill_path import LOCAL, REMOTE, PathChoice, PrefillPath
from services.worker.roles.prefill_pick import PrefillPicker
from shared.engine.base import Engine, EngineError
from shared.engine.capabilities import KvImport
from shared.routing.admission import ticket_of
from shared.runtime.client import EndpointClient
from shared.runtime.errors import NoInstances, RemoteError, WorkerLost, WorkersBusy
from shared.runtime.server import RequestContext
from shared.runtime.service import Service
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter
from shared.telemetry.tracing import extract_context, span
from shared.transfer import AgentDirectory, KvAgent, NotificationInbox, PrefillRequest, PrefillResult, TransferFailed

log = get_logger("shoal.disagg")
PREFILL_FAILURES = counter("shoal_disagg_prefill_failures_total",
                           "Remote prefill attempts that failed (the next attempt goes to another prefill worker)")

# the prefill worker's verdict on the request itself: no other worker would do better
_CLIENT_ERRORS = (ErrorCode.BAD_REQUEST, ErrorCode.CONTEXT_LENGTH, ErrorCode.TIMEOUT, ErrorCode.CANCELLED)


@dataclass(frozen=True)
class DisaggOptions:
    transfer_timeout: float = 10.0
    fallback_local: bool = False
    attempts: int = 2  # prefill workers tried per request


class _Attempt:
    """One reservation + remote prefill; `settled` once the prefill worker can no longer write."""

    def __init__(self, key: str, room: int) -> None:
        self.key, self.room = key, room
        self.settled = False


class DisaggDecodeHandler:
    def __init__(self, engine: Any, prefill: EndpointClient[PrefillResult], inbox: NotificationInbox,
                 boot: BootstrapInfo, opts: DisaggOptions, stream_interval: float = 0.0,
                 picker: PrefillPicker | None = None, path: PrefillPath | None = None) -> None:
        self.engine = engine  # an Engine with KvImport
        self.prefill = prefill
        self.picker = picker or PrefillPicker(prefill)
        self.path = path or PrefillPath()
        self.inbox = inbox
        self.boot = boot  # this worker's host and NIXL agent name; the room is set per request
        self.opts = opts
        self._generate = GenerateHandler(engine, stream_interval)
        self._reapers: set[asyncio.Task[None]] = set()

    async def __call__(self, request: EngineRequest, ctx: RequestContext) -> AsyncIterator[OutputChunk]:
        key: str | None = None
        with span("worker.disagg_prefill", context=extract_context(ctx.headers),
                  attributes={"request_id": request.request_id}) as sp:
            choice = self.path.choose(self.engine, request.token_ids, request.lora)
            try:
                if choice.path == REMOTE:
                    key = await self._remote_prefill(request, ctx)
            except WorkersBusy:
                if not self.path.enabled:
                    raise
                choice = PathChoice(LOCAL, "busy", choice.uncached_tokens)  # the prefill router: all busy
            except TransferFailed as e:
                if not self.opts.fallback_local:
                    raise
                log.warning("disagg_fallback_local", request_id=request.request_id, error=e.message)
                choice = PathChoice(LOCAL, "fallback", choice.uncached_tokens)
            self.path.record(choice, sp)
        local = request if key is None else msgspec.structs.replace(request, request_id=key)
        try:
            async with contextlib.aclosing(self._generate(local, ctx)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            if key is not None:  # a no-op once generate() took the blocks
                await self.engine.release(key)

    async def stop(self) -> None:
        for task in list(self._reapers):
            task.cancel()
        await asyncio.gather(*self._reapers, return_exceptions=True)

    # ---- remote prefill ---------------------------------------------------------------
    async def _remote_prefill(self, request: EngineRequest, ctx: RequestContext) -> str:
        """The engine key under which the request's KV now sits, imported and complete."""
        tried: list[str] = []
        why = "no prefill worker"
        for n in range(self.opts.attempts):
            key = f"{request.request_id}:{n}"
            instance = await self.picker.pick(key, request.token_ids, tried, request.lora, request.routing.session_id,
                                              ticket_of(request))
            if instance is None:
                break
            tried.append(instance)
            self.path.sent(key, instance, len(request.token_ids))
            try:
                return await self._attempt(request, ctx, instance, key)
            except (TransferFailed, WorkerLost, NoInstances) as e:
                why = str(e)
            except RemoteError as e:
                if e.code in _CLIENT_ERRORS:
                    raise
                why = f"{e.code}: {e.message}"
            finally:
                self.picker.finished(key)
                self.path.finished(key)
            PREFILL_FAILURES.inc()
            log.warning("remote_prefill_failed", request_id=request.request_id, prefill=instance, error=why)
        raise TransferFailed(f"remote prefill failed ({', '.join(tried) or 'none available'}): {why}")

    async def _attempt(self, request: EngineRequest, ctx: RequestContext, instance: str, key: str) -> str:
        imported = self.engine.import_kv(key, list(request.token_ids), first_token=0, lora=request.lora)
        att = _Attempt(key, secrets.randbits(62))
        self.inbox.expect(att.room)  # polls NIXL, which also lets the prefill worker's write complete
        try:
            result = await self._call(request, ctx, instance, att, imported)
            if result.blocks_written:
                got = await self.inbox.wait(att.room, self.opts.transfer_timeout)
                if got != "done":
                    raise TransferFailed(f"KV of room {att.room} never arrived ({got or 'timeout'})")
        except BaseException:
            self._discard(att)
            raise
        self.inbox.forget(att.room)
        imported.first_token, imported.first_logprob = result.first_token, result.first_logprob
        return key

    async def _call(self, request: EngineRequest, ctx: RequestContext, instance: str, att: _Attempt,
                    imported: Any) -> PrefillResult:
        first = imported.num_cached_tokens // self.engine.runtime_config().page_size
        boot = msgspec.structs.replace(self.boot, room=att.room)
        preq = PrefillRequest(msgspec.structs.replace(request, request_id=att.key, bootstrap=boot),
                              list(imported.block_ids), first)
        try:
            async with contextlib.aclosing(self.prefill.generate(preq, att.key, instance_id=instance,
                                                                 deadline=ctx.deadline)) as batches:
                async for items in batches:
                    att.settled = True  # its only item comes with the end of its stream
                    return items[0]
        except RemoteError:
            att.settled = True  # the prefill handler ended, its write included
            raise
        raise TransferFailed(f"prefill worker {instance} returned nothing")

    def _discard(self, att: _Attempt) -> None:
        """Free the attempt's blocks now, or once the prefill worker cannot write into them any more."""
        if att.settled:
            self.inbox.forget(att.room)
            self._release_soon(att.key)
            return
        task = asyncio.create_task(self._reap(att), name=f"reap:{att.key}")
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _reap(self, att: _Attempt) -> None:
        try:
            await self.inbox.wait(att.room, self.opts.transfer_timeout + 1.0)
        finally:
            await self.engine.release(att.key)

    def _release_soon(self, key: str) -> None:
        task = asyncio.create_task(self.engine.release(key))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)


async def decode_role(svc: Service, cfg: WorkerConfig, engine: Engine) -> Role:
    """Wire the decode side: NIXL agent (KV registered once, record published), inbox, prefill client."""
    if not isinstance(engine, KvImport):
        raise EngineError(ErrorCode.BAD_REQUEST, f"engine {engine.name} cannot import KV (use --engine reference)")
    rt = svc.rt
    agent = KvAgent(rt.instance_id)
    await agent.start(engine.kv_tensors(), engine.bytes_per_block)
    directory = AgentDirectory(rt, agent)
    await directory.publish()
    inbox = NotificationInbox(agent)
    inbox.start()
    prefill: EndpointClient[PrefillResult] = EndpointClient(rt, cfg.prefill_component, "generate", PrefillResult)
    await prefill.start()
    picker = await PrefillPicker.start(rt, prefill, cfg.prefill_router)
    path = await PrefillPath.start(rt, cfg.disagg_local_prefill_tokens, cfg.prefill_component,
                                   engine.runtime_config().page_size, cfg.prefill_busy.active_decode_blocks_threshold,
                                   cfg.prefill_busy.active_prefill_tokens_threshold, lambda: prefill.instances)
    opts = DisaggOptions(cfg.transfer_timeout, cfg.disagg_fallback_local)
    handler = DisaggDecodeHandler(engine, prefill, inbox, BootstrapInfo(rt.host, 0, 0, rt.instance_id), opts,
                                  cfg.stream_interval, picker, path)

    async def stop() -> None:
        await handler.stop()
        await path.stop()
        await picker.stop()
        await prefill.stop()
        await inbox.stop()
        await directory.revoke()
        await agent.stop()

    return Role(handler, EngineRequest, is_final=lambda c: c.finish_reason is not None, stop=stop)
