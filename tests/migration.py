"""A fault under streaming load, against the same load without it: the client must not notice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from shared.cluster.procs import ServiceProc
from tests.metrics import metric
from tests.tap import TokenTap


class Streamed(NamedTuple):
    text: str
    usage: dict
    response_id: str  # the engine request id (TokenTap.tokens)
    tokens: tuple[tuple[int, ...], ...] = ()  # each token's bytes, in order (stream_text(..., logprobs=True))


def assert_migration_is_invisible(cluster: Any, front: ServiceProc,
                                  run: Callable[[bool], Coroutine[Any, Any, list[Streamed]]]) -> list[Streamed]:
    """`run(False)` then `run(True)` (the one that kills): no migration without the fault, at least one with it,
    and every stream's token ids (read off NATS) and text equal to the run without it. The faulted streams."""
    migrations = {"name": "shoal_frontend_migrations_total", "model": cluster.model_name}
    with TokenTap(cluster.nats.url, cluster.namespace) as tap:
        baseline = asyncio.run(run(False))
        assert metric(front, **migrations) == 0
        faulted = asyncio.run(run(True))
        assert metric(front, **migrations) >= 1  # the kill did catch streams mid-way
        for want, got in zip(baseline, faulted, strict=True):
            assert tap.tokens(got.response_id) == tap.tokens(want.response_id)  # none duplicated or dropped
            assert got.text == want.text
    return faulted
