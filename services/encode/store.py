"""Encoded images waiting in NIXL-registered slots until their reader's READ notification (or a TTL) frees them.

The NIXL agent has no progress thread, so while anything is held the store polls
the agent every millisecond: that progresses the readers' READs and takes their
`mmfree:{handle}` notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import torch

from protocol.messages import ErrorCode
from protocol.multimodal import EmbeddingRef, parse_release
from shared.engine.base import EngineError
from shared.multimodal.slots import SlotPool, dtype_name
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter, gauge
from shared.transfer import KvAgent

log = get_logger("shoal.encode")
FREED = counter("shoal_encode_embeddings_freed_total", "Image embeddings freed, by why", ["why"])
HELD = gauge("shoal_encode_embeddings_held", "Image embeddings waiting to be read")
POLL_S = 0.001


class EmbeddingStore:
    def __init__(self, agent: KvAgent, pool: SlotPool, ttl: float, wait_s: float = 5.0) -> None:
        self.agent, self.pool, self.ttl, self.wait_s = agent, pool, ttl, wait_s
        self._held: dict[int, tuple[int, float]] = {}  # handle -> (slot, expiry)
        self._next = 1
        self._wake = asyncio.Event()
        self._freed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stats = {"stored": 0, "released": 0, "expired": 0}

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="encode-store")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    @property
    def held(self) -> int:
        return len(self._held)

    async def put(self, emb: torch.Tensor) -> EmbeddingRef:
        """Keep `[tokens, hidden]` embeddings in a slot; the reference a reader READs them by."""
        end = time.monotonic() + self.wait_s
        while (slot := self.pool.alloc()) is None:
            if time.monotonic() > end:
                raise EngineError(ErrorCode.OVERLOADED, "every embedding slot is waiting to be read")
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), max(0.0, end - time.monotonic()))
        nbytes = self.pool.put(slot, emb)
        handle, self._next = self._next, self._next + 1
        self._held[handle] = (slot, time.monotonic() + self.ttl)
        self.stats["stored"] += 1
        HELD.set(len(self._held))
        self._wake.set()
        rec = self.agent.record
        return EmbeddingRef(agent=self.agent.name, addr=self.pool.addr(slot), nbytes=nbytes,
                            shape=list(emb.shape), dtype=dtype_name(emb.dtype), handle=handle,
                            device_id=rec.device_id, mem_type=rec.mem_type)

    def _free(self, handle: int, why: str) -> None:
        got = self._held.pop(handle, None)
        if got is None:
            return
        self.pool.free(got[0])
        self.stats[why] += 1
        FREED.labels(why).inc()
        HELD.set(len(self._held))
        self._freed.set()

    async def _poll(self) -> None:
        while True:
            if not self._held:
                self._wake.clear()
                await self._wake.wait()
            try:
                for msg in await self.agent.notifications():
                    handle = parse_release(msg)
                    if handle is not None:
                        self._free(handle, "released")
            except Exception as e:  # keep polling; the TTL frees what a lost notification would have
                log.warning("encode_poll_failed", error=str(e))
                await asyncio.sleep(0.1)
            now = time.monotonic()
            for handle, (_, expiry) in list(self._held.items()):
                if now > expiry:
                    self._free(handle, "expired")
            await asyncio.sleep(POLL_S)
