"""Conditional disaggregation: where the decode worker gets a prompt prefilled, remotely or itself.

Local when the prompt's uncached tokens (on this decode worker's own prefix cache) are fewer than
`--disagg-local-prefill-tokens N` (0: off, the default): a short or mostly cached prompt costs less
to prefill here than a remote prefill plus a KV transfer (ai-dynamo/dynamo#11357). Local too when every
prefill worker is busy by the busy thresholds (`--active-decode-blocks-threshold`,
`--active-prefill-tokens-threshold`, judged from the prefill workers' load reports on the process's
one load subscription), or when the router service over the prefill pool answers that all are busy.
Otherwise remote. `shoal_disagg_prefill_path_total{path, reason}` counts each request's path and the
span attribute `disagg.prefill_path` (with `disagg.prefill_reason`) names it on the request's span.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.discovery import InstanceRecord
from shared.engine.capabilities import PrefixCache
from shared.routing.busy import BusyFilter
from shared.routing.load_feed import LoadFeed
from shared.runtime.runtime import Runtime
from shared.telemetry.metrics import counter

PATHS = counter("shoal_disagg_prefill_path_total",
                "Requests of a decode worker by where their prompt was prefilled: path remote|local; reason "
                "short (uncached tokens under --disagg-local-prefill-tokens), busy (every prefill worker busy), "
                "fallback (the remote prefill failed), uncached (remote: the default)", ["path", "reason"])
REMOTE, LOCAL = "remote", "local"


@dataclass(frozen=True)
class PathChoice:
    path: str  # remote | local
    reason: str  # uncached | short | busy | fallback
    uncached_tokens: int

    def attributes(self) -> dict[str, Any]:
        return {"disagg.prefill_path": self.path, "disagg.prefill_reason": self.reason,
                "disagg.uncached_tokens": self.uncached_tokens}


def cached_tokens(engine: Any, token_ids: Sequence[int], lora: str = "") -> int:
    """Prompt tokens this engine's prefix cache holds (0 for an engine that cannot say)."""
    return engine.cached_prompt_tokens(list(token_ids), lora) if isinstance(engine, PrefixCache) else 0


class PrefillPath:
    """Decides each request's path; `busy` (None: no thresholds) judges the prefill workers."""

    def __init__(self, local_prefill_tokens: int = 0, busy: BusyFilter | None = None,
                 live: Callable[[], list[str]] = list) -> None:
        if local_prefill_tokens < 0:
            raise ValueError(f"--disagg-local-prefill-tokens must be >= 0, not {local_prefill_tokens}")
        self.local_prefill_tokens = local_prefill_tokens
        self.busy = busy
        self.live = live
        self._stop: Callable[[], Awaitable[None]] | None = None

    @classmethod
    async def start(cls, rt: Runtime, local_prefill_tokens: int, prefill_component: str, page_size: int,
                    kv_fraction: float | None, prefill_tokens: int | None,
                    instances: Callable[[], dict[str, InstanceRecord]]) -> PrefillPath:
        busy = None
        if kv_fraction is not None or prefill_tokens is not None:
            busy = BusyFilter(page_size, kv_fraction, prefill_tokens)
        path = cls(local_prefill_tokens, busy, lambda: sorted(instances()))
        if busy is not None:
            path._stop = await LoadFeed.of(rt).add(prefill_component, busy.apply_load)
        return path

    @property
    def enabled(self) -> bool:
        """Conditional disaggregation is on (else every request goes remote, and busy is a 503)."""
        return self.local_prefill_tokens > 0 or self.busy is not None

    async def stop(self) -> None:
        if self._stop is not None:
            await self._stop()

    def choose(self, engine: Any, token_ids: Sequence[int], lora: str = "") -> PathChoice:
        uncached = len(token_ids) - cached_tokens(engine, token_ids, lora)
        if uncached < self.local_prefill_tokens:
            return PathChoice(LOCAL, "short", uncached)
        if self.busy is not None:
            live = self.live()
            if live and not self.busy.free(live):
                return PathChoice(LOCAL, "busy", uncached)
        return PathChoice(REMOTE, "uncached", uncached)

    # the decode worker tells the busy filter what it sent each prefill worker, as a router does
    def sent(self, key: str, instance: str, num_tokens: int) -> None:
        if self.busy is not None:
            self.busy.sent(key, instance, num_tokens)

    def finished(self, key: str) -> None:
        if self.busy is not None:
            self.busy.finished(key)

    @staticmethod
    def record(choice: PathChoice, span: Any) -> None:
        PATHS.labels(choice.path, choice.reason).inc()
        if span is not None and span.is_recording():
            span.set_attributes(choice.attributes())
