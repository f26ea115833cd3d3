"""Calling an endpoint: send a request, stream the response, notice a lost worker.

    client = EndpointClient(runtime, "backend", "generate", OutputChunk)
    await client.start()
    async with contextlib.aclosing(client.generate(req, req.request_id)) as batches:
        async for items in batches:   # every item that arrived since the last read
            ...

Callers never see subjects or inboxes. Closing the iterator early cancels the
request on the worker. A stream fails with WorkerLost when a sequence number
is skipped, the worker is silent past the keep-alive timeout, or its
discovery lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.msg import Msg

from protocol import codec, subjects
from protocol.discovery import InstanceRecord
from protocol.messages import Cancel, ErrorCode, StreamFrame
from shared.runtime.discovery import KeyUpdate
from shared.runtime.errors import NoInstances, RemoteError, RuntimeFailure, WorkerLost, from_info
from shared.runtime.runtime import Runtime
from shared.runtime.server import DEADLINE_HEADER
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger

log = get_logger("shoal.client")

R = TypeVar("R")
InstanceListener = Callable[[str, InstanceRecord | None], None]


class _Stream:
    __slots__ = ("acked_at", "deadline", "error", "event", "expected", "frames", "instance_id",
                 "last_frame", "sent_at")

    def __init__(self, instance_id: str | None, deadline: float | None) -> None:
        self.instance_id = instance_id
        self.deadline = deadline
        self.frames: list[StreamFrame] = []
        self.event = asyncio.Event()
        self.expected = 0
        self.error: RuntimeFailure | None = None
        self.sent_at = self.last_frame = time.monotonic()
        self.acked_at: float | None = None

    def fail(self, error: RuntimeFailure) -> None:
        if self.error is None:
            self.error = error
            self.event.set()


class EndpointClient(Generic[R]):
    def __init__(
        self,
        runtime: Runtime,
        component: str,
        endpoint: str,
        response_type: type[R],
        *,
        keepalive_timeout: float = 5.0,
        ack_timeout: float = 5.0,
    ) -> None:
        self.rt = runtime
        self.component, self.endpoint = component, endpoint
        self._decoder = codec.decoder(response_type)
        self._frame_decoder = codec.decoder(StreamFrame)
        self.keepalive_timeout = keepalive_timeout
        self.ack_timeout = ack_timeout
        self.instances: dict[str, InstanceRecord] = {}
        self._listeners: list[InstanceListener] = []
        self._streams: dict[str, _Stream] = {}
        self._inbox = subjects.inbox_prefix(runtime.name, secrets.token_hex(6))
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: Any = None
        self._synced = asyncio.Event()
        self._changed = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self._sub = await self.rt.nc.subscribe(self._inbox + ".*", cb=self._on_frame)
        self._tasks = [
            asyncio.create_task(self._watch_instances(), name=f"watch:{self.component}"),
            asyncio.create_task(self._watchdog(), name=f"watchdog:{self.component}"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), 5.0)

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    def add_listener(self, fn: InstanceListener) -> None:
        """Called with (instance_id, record) on arrival and (instance_id, None) on departure."""
        self._listeners.append(fn)
        for iid, rec in self.instances.items():
            fn(iid, rec)

    def instance_ids(self) -> list[str]:
        return list(self.instances)

    async def wait_for_instances(self, n: int = 1, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while len(self.instances) < n:
            left = end - time.monotonic()
            if left <= 0:
                raise NoInstances(f"no {self.component}/{self.endpoint} instance after {timeout}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    # ---- requests -------------------------------------------------------------------
    async def generate(
        self,
        request: msgspec.Struct,
        request_id: str,
        *,
        instance_id: str | None = None,
        deadline: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[list[R]]:
        """Stream the response in batches of items; see the module docstring."""
        token = secrets.token_hex(8)
        st = _Stream(instance_id, deadline)
        self._streams[token] = st
        hdrs = dict(headers) if headers else {}
        if deadline is not None:
            hdrs[DEADLINE_HEADER] = f"{deadline:.3f}"
        ns = self.rt.namespace
        subject = (subjects.instance_subject(ns, self.component, self.endpoint, instance_id) if instance_id
                   else subjects.endpoint_subject(ns, self.component, self.endpoint))
        finished = False
        try:
            await self.rt.nc.publish(subject, codec.encode(request), reply=f"{self._inbox}.{token}",
                                     headers=hdrs or None)
            while True:
                await st.event.wait()
                frames, st.frames = st.frames, []
                st.event.clear()
                items, finished = self._consume(st, frames)
                if items:
                    yield items
                if finished:
                    return
                if st.error is not None:
                    raise st.error
        finally:
            self._streams.pop(token, None)
            if not finished and st.instance_id:
                await self._cancel(st.instance_id, request_id)

    def _consume(self, st: _Stream, frames: list[StreamFrame]) -> tuple[list[R], bool]:
        items: list[R] = []
        for f in frames:
            if f.seq != st.expected:
                raise WorkerLost(f"stream gap: expected frame {st.expected}, got {f.seq}",
                                 st.instance_id or "", started=st.acked_at is not None)
            st.expected += 1
            for raw in f.items:
                items.append(self._decoder.decode(raw))
            if f.final:
                if f.error is not None:
                    if items:  # deliver what came before the error first
                        st.frames.insert(0, StreamFrame(seq=f.seq, final=True, error=f.error))
                        st.expected -= 1
                        st.event.set()
                        return items, False
                    err = from_info(f.error)
                    if isinstance(err, WorkerLost):
                        err.instance_id, err.started = st.instance_id or "", True
                    raise err
                return items, True
        return items, False

    async def _cancel(self, instance_id: str, request_id: str) -> None:
        subject = subjects.control_subject(self.rt.namespace, self.component, instance_id)
        with contextlib.suppress(Exception):
            await self.rt.nc.publish(subject, codec.encode(Cancel(request_id=request_id)))

    # ---- background -----------------------------------------------------------------
    async def _on_frame(self, msg: Msg) -> None:
        st = self._streams.get(msg.subject.rpartition(".")[2])
        if st is None:
            return
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            st.fail(WorkerLost(f"no {self.component}/{self.endpoint} instance is listening on this subject",
                               st.instance_id or ""))  # never started: safe to retry elsewhere
            return
        try:
            frame = self._frame_decoder.decode(msg.data)
        except msgspec.DecodeError:
            st.fail(RemoteError("undecodable frame", ErrorCode.INTERNAL))
            return
        st.last_frame = time.monotonic()
        if frame.seq == 0:  # the first frame names the instance that took the request
            st.instance_id = frame.instance_id or st.instance_id
            st.acked_at = st.last_frame
        if not frame.keepalive or frame.seq != st.expected:
            st.frames.append(frame)
            st.event.set()
        else:
            st.expected += 1

    async def _watch_instances(self) -> None:
        async def apply(upd: KeyUpdate) -> None:
            self._apply_instance(upd.key.rpartition(".")[2], upd.value, upd.expired)
            self._synced.set()

        key_filter = subjects.instance_key_filter(self.rt.namespace, self.component, self.endpoint)
        await self.rt.discovery.follow(subjects.INSTANCES_BUCKET, key_filter, apply)

    def _apply_instance(self, iid: str, value: bytes | None, expired: bool = False) -> None:
        if value is None:
            if self.instances.pop(iid, None) is None:
                return
            log.info("instance_gone", component=self.component, instance_id=iid, expired=expired)
            if expired:  # a draining instance deregisters first and still finishes its streams
                for st in self._streams.values():
                    if st.instance_id == iid:
                        st.fail(WorkerLost(f"instance {iid} lease expired", iid, st.acked_at is not None))
        else:
            rec = codec.decode(value, InstanceRecord)
            if iid not in self.instances:
                log.info("instance_added", component=self.component, instance_id=iid)
            self.instances[iid] = rec
        self._changed.set()
        for fn in self._listeners:
            fn(iid, self.instances.get(iid))

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now, wall = time.monotonic(), time.time()
            for st in list(self._streams.values()):
                if st.error is not None:
                    continue
                if st.deadline is not None and wall > st.deadline:
                    st.fail(RuntimeFailure("request deadline passed", ErrorCode.TIMEOUT))
                elif st.acked_at is None and now - st.sent_at > self.ack_timeout:
                    st.fail(WorkerLost("no instance acknowledged the request", st.instance_id or ""))
                elif st.acked_at is not None and now - st.last_frame > self.keepalive_timeout:
                    st.fail(WorkerLost(f"instance {st.instance_id} went silent", st.instance_id or "", True))
