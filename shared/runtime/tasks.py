"""Stopping background tasks without ever hanging on one.

A task that is cancelled normally ends at once. One that swallows its cancellation keeps running,
and `await task` then never returns: asyncio.wait_for in Python 3.11 can do that when its inner
future completes just as the cancel arrives, and client libraries await through it. Shutdown paths
(lease revoke, client and server stop, publishers) therefore wait a bounded time, cancel again what
is still running, log it, and go on.
"""

from __future__ import annotations

import asyncio

from shared.telemetry.logging import get_logger

log = get_logger("shoal.runtime")
STOP_WAIT_S = 2.0


async def cancel_and_wait(*tasks: asyncio.Task[object] | None, timeout: float = STOP_WAIT_S) -> None:
    """Cancel `tasks` and wait up to `timeout` seconds for them to end; never raises their errors."""
    live = [t for t in tasks if t is not None and not t.done()]
    for t in live:
        t.cancel()
    if not live:
        return
    done, pending = await asyncio.wait(live, timeout=timeout)
    for t in done:
        if not t.cancelled():
            t.exception()  # retrieved: no "exception was never retrieved" at exit
    for t in pending:
        t.cancel()
        log.warning("task_ignored_cancel", task=t.get_name(), waited_s=timeout)
