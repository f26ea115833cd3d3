"""Shutdown never hangs on a background task that swallows its cancellation."""

from __future__ import annotations

import asyncio
import time

from shared.runtime.discovery import Lease
from shared.runtime.tasks import cancel_and_wait


async def test_cancel_and_wait_is_bounded_for_a_task_that_ignores_cancel() -> None:
    stop = False

    async def stubborn() -> None:
        while not stop:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass  # as asyncio.wait_for in 3.11 can, when its future completes as the cancel arrives

    async def fails() -> None:
        raise ValueError("boom")

    bad, quiet = asyncio.create_task(stubborn()), asyncio.create_task(fails())
    await asyncio.sleep(0)
    t0 = time.monotonic()
    await cancel_and_wait(bad, quiet, None, timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 1.0
    assert quiet.done() and not bad.done()
    stop = True
    await asyncio.wait_for(bad, 1.0)


class _SwallowingJs:
    """A JetStream publish that ignores cancellation (the failure mode seen in a CI run: revoke hung)."""

    def __init__(self) -> None:
        self.puts = 0

    async def publish(self, subject: str, payload: bytes, **kw: object) -> None:
        self.puts += 1
        try:
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            pass


class _Kv:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete(self, key: str) -> None:
        self.deleted.append(key)


async def test_lease_revoke_ends_even_when_a_refresh_swallows_the_cancel() -> None:
    js, kv = _SwallowingJs(), _Kv()
    lease = Lease(js, kv, "b", "k", b"v", ttl=0.015)  # type: ignore[arg-type]
    await lease.grant()
    for _ in range(200):  # refreshing (a few refreshes; bounded at 2 s for a loaded machine)
        if js.puts > 2:
            break
        await asyncio.sleep(0.01)
    assert js.puts > 2
    task = lease._task
    await asyncio.wait_for(lease.revoke(), 3.0)
    assert kv.deleted == ["k"]
    assert task is not None
    await asyncio.wait({task}, timeout=1.0)  # the loop ended: by the revoke flag, or cancelled in its sleep
    assert task.done()
    puts = js.puts
    await asyncio.sleep(0.1)
    assert js.puts == puts
