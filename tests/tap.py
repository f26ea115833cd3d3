"""The token ids a frontend was served, read off NATS: tests compare ids, not decoded text.

    with TokenTap(cluster.nats.url, cluster.namespace) as tap:
        body = complete(...)
        assert tap.tokens(body["id"]) == expected_ids

The tap listens on its own connection (and thread) to what the frontend sends to
`*.generate` endpoints and to the stream frames coming back to its inboxes. The
response id is the engine request id; a migrated request continues as
`{id}-m{n}` with the tokens served so far appended to its prompt, so the ids the
client got are that carried-over part plus what the last attempt streamed.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import msgspec
import nats
from nats.aio.msg import Msg

from protocol import codec, subjects
from protocol.messages import EngineRequest, OutputChunk, StreamFrame

_ATTEMPT = re.compile(r"^(?P<id>.+?)(?:-m(?P<n>\d+))?$")


@dataclass
class _Attempt:
    request: EngineRequest
    tokens: list[int] = field(default_factory=list)
    finished: bool = False


class TokenTap:
    def __init__(self, nats_url: str, namespace: str, frontend: str = "frontend") -> None:
        self.nats_url, self.namespace = nats_url, namespace
        self.inbox = subjects.service_inbox(frontend)
        self._attempts: dict[str, _Attempt] = {}  # by reply subject
        self._early: dict[str, list[StreamFrame]] = {}  # frames seen before their request
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="token-tap", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> TokenTap:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"token tap could not subscribe: {self._error!r}")
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def tokens(self, response_id: str, timeout: float = 10.0) -> list[int]:
        """The ids served for one response (after it finished: waits up to `timeout` for its last frame)."""
        end = time.monotonic() + timeout
        with self._cond:
            while (ids := self._served(response_id)) is None:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the tap saw no finished stream for {response_id!r}")
                self._cond.wait(left)
            return ids

    def _served(self, response_id: str) -> list[int] | None:
        finished: list[tuple[int, _Attempt]] = []
        prompt_len: int | None = None
        for a in self._attempts.values():
            m = _ATTEMPT.match(a.request.request_id)
            if m is None or m["id"] != response_id:
                continue
            n = int(m["n"] or 0)
            if n == 0:
                prompt_len = len(a.request.token_ids)
            if a.finished:
                finished.append((n, a))
        if not finished or prompt_len is None:
            return None
        _, last = max(finished, key=lambda x: x[0])
        return [*last.request.token_ids[prompt_len:], *last.tokens]

    # ---- the listener thread ------------------------------------------------------------------
    async def _main(self) -> None:
        try:
            nc = await nats.connect(self.nats_url, name="test-token-tap")
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            generate = subjects.endpoint_subject(self.namespace, "*", "generate")
            for subject in (generate, generate + ".*"):
                await nc.subscribe(subject, cb=self._on_request)
            await nc.subscribe(self.inbox + ".>", cb=self._on_frame)
            await nc.flush()
        except BaseException as e:
            self._error = e
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply.startswith(self.inbox + "."):
            return  # another service's call (processor -> worker, decode -> prefill)
        try:
            request = codec.decode(msg.data, EngineRequest)
        except msgspec.DecodeError:
            return
        with self._cond:
            self._attempts[msg.reply] = _Attempt(request)
            for frame in self._early.pop(msg.reply, []):
                self._add(self._attempts[msg.reply], frame)
            self._cond.notify_all()

    async def _on_frame(self, msg: Msg) -> None:
        if not msg.data:
            return  # "no responders" status
        frame = codec.decode(msg.data, StreamFrame)
        with self._cond:
            attempt = self._attempts.get(msg.subject)
            if attempt is None:
                self._early.setdefault(msg.subject, []).append(frame)
                return
            self._add(attempt, frame)
            self._cond.notify_all()

    @staticmethod
    def _add(attempt: _Attempt, frame: StreamFrame) -> None:
        for raw in frame.items:
            chunk = codec.decode(raw, OutputChunk)
            attempt.tokens.extend(chunk.token_ids)
            attempt.finished = attempt.finished or chunk.finish_reason is not None
