"""Disaggregation on SGLang: the decode worker pairs each request with a prefill worker.

SGLang moves the KV itself (its bootstrap server and NIXL or Mooncake backend);
shoal only has to start both halves of a request with the same bootstrap host,
port and room, and at the same time: SGLang's prefill waits for the decode side
to register the room and reserve KV, so awaiting the prefill first would never
finish. Per request the decode worker

1. picks a prefill instance (`PrefillPicker`: the `--prefill-router` service's
   KV-aware choice, else round-robin over live ones; each publishes its
   bootstrap host and port in its instance record's metadata) and a random
   63-bit room;
2. sends the prefill worker a `PrefillRequest` (no blocks: SGLang writes them)
   and runs its own engine's `generate` with the same bootstrap, concurrently;
3. streams its own engine's output. If the prefill call fails before the first
   token, the local request is aborted and the pair is tried once more on
   another prefill worker; after that the request ends with `transfer_failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import msgspec

from protocol.discovery import InstanceRecord, bootstrap_of
from protocol.messages import BootstrapInfo, EngineRequest, ErrorCode, OutputChunk
from protocol.transfer import PrefillRequest, PrefillResult
from services.worker.args import WorkerConfig
from services.worker.role import Role
from services.worker.roles.aggregated import GenerateHandler
from services.worker.roles.prefill_pick import PrefillPicker
from shared.engine.base import Engine
from shared.errors import TransferFailed
from shared.routing.admission import ticket_of
from shared.runtime.client import EndpointClient
from shared.runtime.errors import NoInstances, RemoteError, WorkerLost
from shared.runtime.server import RequestContext
from shared.runtime.service import Service
from shared.telemetry.logging import get_logger

log = get_logger("shoal.disagg")

_CLIENT_ERRORS = (ErrorCode.BAD_REQUEST, ErrorCode.CONTEXT_LENGTH, ErrorCode.TIMEOUT, ErrorCode.CANCELLED)


class _PrefillFailed(Exception):
    def __init__(self, instance: str, why: str, cause: BaseException) -> None:
        super().__init__(why)
        self.instance, self.why, self.cause = instance, why, cause


class SglangPairHandler:
    def __init__(self, engine: Engine, prefill: EndpointClient[PrefillResult], stream_interval: float = 0.0,
                 attempts: int = 2, picker: PrefillPicker | None = None) -> None:
        self.engine = engine
        self.prefill = prefill
        self.attempts = attempts
        self.picker = picker or PrefillPicker(prefill, eligible=has_bootstrap)
        self._generate = GenerateHandler(engine, stream_interval)

    async def __call__(self, request: EngineRequest, ctx: RequestContext) -> AsyncIterator[OutputChunk]:
        tried: list[str] = []
        why = "no prefill worker"
        for n in range(self.attempts):
            key = f"{request.request_id}:{n}"
            instance = await self.picker.pick(key, request.token_ids, tried, session_id=request.routing.session_id,
                                              ticket=ticket_of(request))
            if instance is None:
                break
            tried.append(instance)
            boot = self._bootstrap(instance)
            produced = False
            try:
                async with contextlib.aclosing(self._pair(request, ctx, instance, boot, key)) as chunks:
                    async for chunk in chunks:
                        produced = True
                        yield chunk
                return
            except _PrefillFailed as e:
                if produced or (isinstance(e.cause, RemoteError) and e.cause.code in _CLIENT_ERRORS):
                    raise e.cause from None
                why = e.why
                log.warning("remote_prefill_failed", request_id=request.request_id, prefill=instance, error=why)
        raise TransferFailed(f"remote prefill failed ({', '.join(tried) or 'none available'}): {why}")

    def _bootstrap(self, instance: str) -> BootstrapInfo:
        host, port = bootstrap_of(self.prefill.instances[instance]) or ("", 0)
        return BootstrapInfo(host, port, secrets.randbits(63), instance)

    async def _pair(self, request: EngineRequest, ctx: RequestContext, instance: str, boot: BootstrapInfo,
                    key: str) -> AsyncIterator[OutputChunk]:
        """Both halves at once; the decode half's chunks, or _PrefillFailed.

        The decode half runs in a task of its own (one task for the whole stream, so its
        trace span stays in one context) and hands chunks over one at a time."""
        req = msgspec.structs.replace(request, bootstrap=boot)
        remote = asyncio.create_task(self._remote_prefill(req, ctx, instance, key), name=f"prefill:{key}")
        handover: asyncio.Queue[OutputChunk | BaseException | None] = asyncio.Queue(maxsize=1)
        local = asyncio.create_task(self._pump(req, ctx, handover), name=f"decode:{request.request_id}")
        try:
            while True:
                nxt = asyncio.ensure_future(handover.get())
                if not remote.done():
                    await asyncio.wait({nxt, remote}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done() and remote.exception() is not None:
                    nxt.cancel()
                    raise remote.exception()  # type: ignore[misc]
                item = await nxt
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in (local, remote):  # the local request is aborted, the remote one cancelled
                task.cancel()
            await asyncio.gather(local, remote, return_exceptions=True)

    async def _pump(self, req: EngineRequest, ctx: RequestContext,
                    handover: asyncio.Queue[OutputChunk | BaseException | None]) -> None:
        try:
            async with contextlib.aclosing(self._generate(req, ctx)) as chunks:
                async for chunk in chunks:
                    await handover.put(chunk)
        except Exception as e:
            await handover.put(e)
            return
        await handover.put(None)

    async def _remote_prefill(self, req: EngineRequest, ctx: RequestContext, instance: str,
                              key: str) -> PrefillResult:
        try:
            async with contextlib.aclosing(self.prefill.generate(
                PrefillRequest(req, []), req.request_id, instance_id=instance, deadline=ctx.deadline,
                headers=ctx.headers,
            )) as batches:
                async for items in batches:
                    return items[0]
        except (WorkerLost, NoInstances) as e:
            raise _PrefillFailed(instance, str(e), e) from e
        except RemoteError as e:
            raise _PrefillFailed(instance, f"{e.code}: {e.message}", e) from e
        finally:
            self.picker.finished(key)
        empty = TransferFailed(f"prefill worker {instance} returned nothing")
        raise _PrefillFailed(instance, empty.message, empty)


async def sglang_decode_role(svc: Service, cfg: WorkerConfig, engine: Engine) -> Role:
    """The decode side on SGLang: a client of the prefill component, no NIXL agent of shoal's."""
    prefill: EndpointClient[PrefillResult] = EndpointClient(svc.rt, cfg.prefill_component, "generate", PrefillResult)
    await prefill.start()
    picker = await PrefillPicker.start(svc.rt, prefill, cfg.prefill_router, eligible=has_bootstrap)
    handler = SglangPairHandler(engine, prefill, cfg.stream_interval, picker=picker)

    async def stop() -> None:
        await picker.stop()
        await prefill.stop()

    return Role(handler, EngineRequest, is_final=lambda c: c.finish_reason is not None, stop=stop)


def has_bootstrap(rec: InstanceRecord) -> bool:
    """Only SGLang prefill workers (they advertise their bootstrap server) can pair with this worker."""
    return bootstrap_of(rec) is not None
