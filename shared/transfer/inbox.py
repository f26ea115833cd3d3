"""The receiving side: expect a room, then wait for its `done` or `abort` notification.

NIXL is polled (on the agent's thread) while any room is expected. The agent
has no progress thread (it would spin a core), so this polling is also what lets
a writer's transfer complete: expect the room *before* asking for the write. A
notification that arrives for a room nobody expects is kept for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from protocol.transfer import parse_tag
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger
from shared.transfer.agent import KvAgent

log = get_logger("shoal.transfer")


class NotificationInbox:
    def __init__(self, agent: KvAgent, poll_s: float = 0.001, keep_s: float = 120.0) -> None:
        self.agent = agent
        self.poll_s = poll_s
        self.keep_s = keep_s
        self._waiters: dict[int, asyncio.Future[str]] = {}
        self._arrived: dict[int, tuple[str, float]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="nixl-inbox")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        for fut in self._waiters.values():
            fut.cancel()

    def expect(self, room: int) -> None:
        """Start polling for `room` (a write into this worker is about to be asked for)."""
        if room in self._waiters:
            return
        fut = self._waiters[room] = asyncio.get_running_loop().create_future()
        seen = self._arrived.pop(room, None)
        if seen is not None:
            fut.set_result(seen[0])
        self._wake.set()

    def forget(self, room: int) -> None:
        """Stop expecting `room` (its writer can no longer write)."""
        fut = self._waiters.pop(room, None)
        if fut is not None:
            fut.cancel()

    def filed(self, room: int) -> bool:
        """Whether `room`'s notification came while nobody was waiting for it."""
        return room in self._arrived

    async def wait(self, room: int, timeout: float) -> str | None:
        """`"done"` or `"abort"` once the room's notification is here; None after `timeout`."""
        self.expect(room)
        try:
            return await asyncio.wait_for(asyncio.shield(self._waiters[room]), timeout)
        except TimeoutError:
            return None
        finally:
            self.forget(room)

    async def _poll(self) -> None:
        while True:
            if not self._waiters:
                self._wake.clear()
                await self._wake.wait()
            try:
                self._deliver(await self.agent.notifications())
            except Exception as e:  # keep polling; a waiter times out on its own
                log.warning("nixl_poll_failed", error=str(e))
                await asyncio.sleep(0.1)
            await asyncio.sleep(self.poll_s)

    def _deliver(self, msgs: list[bytes]) -> None:
        now = time.monotonic()
        for msg in msgs:
            tag = parse_tag(msg)
            if tag is None:
                continue
            kind, room = tag
            fut = self._waiters.get(room)
            if fut is not None and not fut.done():
                fut.set_result(kind)
            else:
                self._arrived[room] = (kind, now)
        for room, (_, t) in list(self._arrived.items()):
            if now - t > self.keep_s:
                with contextlib.suppress(KeyError):
                    del self._arrived[room]
