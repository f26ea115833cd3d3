"""Grammar compiles run in their own small thread pool with a deadline, never in asyncio's default pool.

A grammar can take seconds to compile (a deep schema: tens of seconds). In the default
pool such compiles would hold the threads that tokenize prompts; here at most
COMPILE_THREADS run at once, and a request waits at most COMPILE_TIMEOUT_S for its own
(queueing included) before it fails with a GrammarError. xgrammar cannot be interrupted:
a compile past its deadline finishes in its thread, and its result is cached as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from shared.grammar.compiler import GrammarError

T = TypeVar("T")
COMPILE_THREADS = 2
COMPILE_TIMEOUT_S = 10.0
_pool: ThreadPoolExecutor | None = None


def configure(timeout: float = COMPILE_TIMEOUT_S) -> None:
    """This process's compile deadline (the frontend's --grammar-compile-timeout)."""
    global COMPILE_TIMEOUT_S
    COMPILE_TIMEOUT_S = timeout


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=COMPILE_THREADS, thread_name_prefix="grammar-compile")
    return _pool


async def run_compile(fn: Callable[[], T], timeout: float | None = None) -> T:
    """`fn()` (a compile) in the grammar pool; GrammarError when it is not done within `timeout` seconds
    (default COMPILE_TIMEOUT_S). A compile still queued at its deadline never starts."""
    timeout = COMPILE_TIMEOUT_S if timeout is None else timeout
    future = asyncio.get_running_loop().run_in_executor(_executor(), fn)
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise GrammarError(f"the grammar did not compile within {timeout:g} s; send a smaller or flatter one") \
            from None
