"""Serving an endpoint: requests in over NATS, a stream of frames back.

    server = EndpointServer(runtime, "backend", "generate", handler, EngineRequest)
    await server.start()        # subscribed, not yet discoverable
    await server.register(...)  # readiness gate: publish the instance record
    ...
    await server.drain()        # deregister, stop taking requests, finish in-flight

A handler is `async def handler(request, ctx) -> AsyncIterator[Struct]`.
Each request gets frames numbered from 0 (the first names this instance; a
keep-alive goes out after a second of silence), and the stream ends with a
final frame: the last item itself when `is_final(item)` says so, else an empty
one (with an error if the handler failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.msg import Msg

from protocol import codec, subjects
from protocol.discovery import InstanceRecord
from protocol.messages import Cancel, ErrorCode, ErrorInfo, StreamFrame
from shared.errors import ShoalError
from shared.runtime.discovery import Lease
from shared.runtime.runtime import Runtime
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter, gauge, histogram

log = get_logger("shoal.server")

REQUESTS = counter("shoal_endpoint_requests_total", "Requests an endpoint ended, by outcome (ok or the error code)",
                   ["component", "endpoint", "outcome"])
INFLIGHT = gauge("shoal_endpoint_inflight_requests", "Requests an endpoint is serving now", ["component", "endpoint"],
                 multiprocess_mode="livesum")
DURATION = histogram("shoal_endpoint_request_duration_seconds", "From taking a request to its last frame",
                     ["component", "endpoint"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                                         60, 120, 300))

T = TypeVar("T")
DEADLINE_HEADER = "Shoal-Deadline"
REQUEST_ID_HEADER = "Shoal-Request-Id"


@dataclass
class RequestContext:
    request_id: str
    instance_id: str
    headers: dict[str, str]
    deadline: float | None = None  # unix time
    started: float = field(default_factory=time.monotonic)


Handler = Callable[[Any, RequestContext], AsyncIterator[msgspec.Struct]]


class _Inflight:
    __slots__ = ("last_sent", "reply", "seq", "started", "task")

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.seq = 0
        self.started = self.last_sent = time.monotonic()
        self.task: asyncio.Task[None] | None = None


class EndpointServer(Generic[T]):
    def __init__(
        self,
        runtime: Runtime,
        component: str,
        endpoint: str,
        handler: Handler,
        request_type: type[T],
        *,
        keepalive: float = 1.0,
        max_inflight: int = 4096,
        request_id_of: Callable[[T], str] = lambda r: r.request_id,  # type: ignore[attr-defined]
        is_final: Callable[[Any], bool] | None = None,
    ) -> None:
        self.rt = runtime
        self.component = subjects.check_token(component, "component")
        self.endpoint = subjects.check_token(endpoint, "endpoint")
        self.handler = handler
        self._decoder = codec.decoder(request_type)
        self._request_id_of = request_id_of
        self.is_final = is_final  # an item after which the handler yields nothing more
        self.keepalive = keepalive
        self.max_inflight = max_inflight
        self.inflight: dict[str, _Inflight] = {}
        self._subs: list[Any] = []
        self._lease: Lease | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.draining = False
        self.last_served = time.monotonic()  # when a handler last sent an item (shared.runtime.canary's clock)
        self._record: InstanceRecord | None = None
        self._inflight_gauge = INFLIGHT.labels(self.component, self.endpoint)
        self._duration = DURATION.labels(self.component, self.endpoint)

    def _count(self, outcome: str) -> None:
        REQUESTS.labels(self.component, self.endpoint, outcome).inc()

    @property
    def instance_id(self) -> str:
        return self.rt.instance_id

    async def start(self) -> None:
        ns, nc = self.rt.namespace, self.rt.nc
        any_subject = subjects.endpoint_subject(ns, self.component, self.endpoint)
        self._subs = [
            await nc.subscribe(any_subject, queue=any_subject, cb=self._on_request),
            await nc.subscribe(
                subjects.instance_subject(ns, self.component, self.endpoint, self.instance_id),
                cb=self._on_request,
            ),
            await nc.subscribe(subjects.control_subject(ns, self.component, self.instance_id),
                               cb=self._on_control),
        ]
        self._ticker = asyncio.create_task(self._keepalive_loop(), name="server-keepalive")

    async def register(self, model: str = "", metadata: dict[str, str] | None = None) -> None:
        """Readiness gate: call once the engine can serve; then the instance is visible."""
        rec = InstanceRecord(
            namespace=self.rt.namespace, component=self.component, endpoint=self.endpoint,
            instance_id=self.instance_id, host=self.rt.host, pid=self.rt.pid,
            started_at=time.time(), model=model, metadata=metadata or {},
        )
        key = subjects.instance_key(self.rt.namespace, self.component, self.endpoint, self.instance_id)
        self._lease = await self.rt.discovery.lease(subjects.INSTANCES_BUCKET, key, codec.encode(rec),
                                                    heartbeat=True)
        self._record = rec
        log.info("instance_registered", component=self.component, endpoint=self.endpoint,
                 instance_id=self.instance_id)

    async def set_healthy(self, healthy: bool) -> None:
        """Publish the instance record with this health flag; clients route only to healthy instances."""
        if self._lease is None or self._record is None or self._record.healthy == healthy:
            return
        self._record = msgspec.structs.replace(self._record, healthy=healthy)
        await self._lease.update(codec.encode(self._record))

    async def drain(self, grace: float = 30.0) -> None:
        """Deregister, stop taking requests, let in-flight ones finish, then end the rest."""
        self.draining = True
        if self._lease is not None:
            await self._lease.revoke()
        for sub in self._subs[:2]:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        deadline = time.monotonic() + grace
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for st in list(self.inflight.values()):  # the frontend migrates these
            if st.task is not None:
                st.task.cancel(msg="drain")
        await self.stop()

    async def stop(self) -> None:
        await cancel_and_wait(self._ticker, *(st.task for st in self.inflight.values()))
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._lease is not None:
            await self._lease.revoke()
            self._lease = None

    # ---- request handling -------------------------------------------------------------
    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        headers = msg.headers or {}
        try:
            request = self._decoder.decode(msg.data)
            request_id = self._request_id_of(request)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self._count(ErrorCode.BAD_REQUEST)
            await self._send(msg.reply, StreamFrame(seq=0, final=True, instance_id=self.instance_id,
                                                    error=ErrorInfo(ErrorCode.BAD_REQUEST, str(e))))
            return
        if self.draining or len(self.inflight) >= self.max_inflight or request_id in self.inflight:
            code = ErrorCode.WORKER_LOST if self.draining else ErrorCode.OVERLOADED
            why = "instance draining" if self.draining else "instance at capacity or duplicate request id"
            self._count(code)
            await self._send(msg.reply, StreamFrame(seq=0, final=True, instance_id=self.instance_id,
                                                    error=ErrorInfo(code, why, retry_after=1.0)))
            return
        deadline = float(headers[DEADLINE_HEADER]) if DEADLINE_HEADER in headers else None
        ctx = RequestContext(request_id, self.instance_id, headers, deadline)
        st = _Inflight(msg.reply)
        self.inflight[request_id] = st
        self._inflight_gauge.inc()
        st.task = asyncio.create_task(self._run(request, ctx, st))

    async def _run(self, request: Any, ctx: RequestContext, st: _Inflight) -> None:
        error: ErrorInfo | None = None
        timer = None
        if ctx.deadline is not None:
            task = asyncio.current_task()
            delay = max(0.0, ctx.deadline - time.time())
            timer = asyncio.get_running_loop().call_later(delay, task.cancel, "deadline")  # type: ignore[union-attr]
        try:
            async with contextlib.aclosing(self.handler(request, ctx)) as items:
                async for item in items:
                    final = self.is_final is not None and self.is_final(item)
                    await self._frame(st, StreamFrame(seq=st.seq, items=[msgspec.Raw(codec.encode(item))],
                                                      final=final))
                    self.last_served = time.monotonic()
                    if final:  # the last item travels with the end of the stream: one message fewer
                        return
        except asyncio.CancelledError as e:
            error = self._cancel_error(e)
            if error is None:
                error = ErrorInfo(ErrorCode.CANCELLED, "stopped")  # counted; no frame goes out
                raise
        except ShoalError as e:
            error = e.info()
        except Exception as e:
            log.exception("handler_failed", request_id=ctx.request_id)
            error = ErrorInfo(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")
        finally:
            if timer is not None:
                timer.cancel()
            self.inflight.pop(ctx.request_id, None)
            self._inflight_gauge.dec()
            self._duration.observe(time.monotonic() - st.started)
            self._count("ok" if error is None else error.code)
        with contextlib.suppress(Exception):
            await self._frame(st, StreamFrame(seq=st.seq, final=True, error=error))

    @staticmethod
    def _cancel_error(e: asyncio.CancelledError) -> ErrorInfo | None:
        why = e.args[0] if e.args else None
        if why == "deadline":
            return ErrorInfo(ErrorCode.TIMEOUT, "request deadline passed")
        if why == "drain":
            return ErrorInfo(ErrorCode.WORKER_LOST, "instance drained")
        if why == "cancel":
            return ErrorInfo(ErrorCode.CANCELLED, "cancelled")
        return None

    async def _frame(self, st: _Inflight, frame: StreamFrame) -> None:
        if st.seq == 0:  # the first frame names the instance (the caller may have used the queue group)
            frame = msgspec.structs.replace(frame, instance_id=self.instance_id)
        st.seq += 1
        st.last_sent = time.monotonic()
        await self._send(st.reply, frame)

    async def _send(self, reply: str, frame: StreamFrame) -> None:
        await self.rt.nc.publish(reply, codec.encode(frame))

    async def _on_control(self, msg: Msg) -> None:
        try:
            cancel = codec.decode(msg.data, Cancel)
        except msgspec.DecodeError:
            return
        st = self.inflight.get(cancel.request_id)
        if st is not None and st.task is not None:
            log.debug("request_cancelled", request_id=cancel.request_id, reason=cancel.reason)
            st.task.cancel(msg="cancel")

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive)
            now = time.monotonic()
            for st in list(self.inflight.values()):
                if now - st.last_sent >= self.keepalive:
                    with contextlib.suppress(Exception):
                        await self._frame(st, StreamFrame(seq=st.seq, keepalive=True))
