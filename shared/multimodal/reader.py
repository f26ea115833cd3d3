"""The LLM worker's side of E/PD and E/P/D: READ an image's embeddings from the encode worker over NIXL.

The READ carries `release_tag(handle)`, so the encoder frees its copy as soon as
the bytes are here. Local memory is a small slot pool registered once with a NIXL
agent of its own (`{instance_id}-mm`).
"""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from protocol.messages import ErrorCode
from protocol.multimodal import EmbeddingRef, release_tag
from shared.errors import EngineError
from shared.multimodal.slots import DTYPES, SlotPool
from shared.runtime.runtime import Runtime
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter
from shared.transfer import AgentDirectory, KvAgent, TransferFailed

log = get_logger("shoal.multimodal")
READS = counter("shoal_image_embedding_reads_total", "Image embeddings read from encode workers over NIXL",
                ["outcome"])


class EmbeddingReader:
    def __init__(self, rt: Runtime, slots: int, slot_bytes: int, timeout: float = 10.0) -> None:
        self.pool = SlotPool(slots, slot_bytes)
        self.agent = KvAgent(f"{rt.instance_id}-mm")
        self.directory = AgentDirectory(rt, self.agent)
        self.timeout = timeout
        self._free = asyncio.Condition()
        self.reads = 0

    async def start(self) -> None:
        await self.agent.start([self.pool.tensor], self.pool.slot_bytes)

    async def stop(self) -> None:
        await self.agent.stop()

    async def read(self, ref: EmbeddingRef) -> torch.Tensor:
        """The embeddings `ref` names, `[tokens, hidden]`; raises TransferFailed."""
        if ref.dtype not in DTYPES or ref.nbytes > self.pool.slot_bytes:
            raise EngineError(ErrorCode.BAD_REQUEST, f"image embeddings of {ref.nbytes} bytes ({ref.dtype}) do not fit "
                              f"this worker's slots of {self.pool.slot_bytes} bytes")
        slot = await self._alloc()
        try:
            peer = await self.directory.peer(ref.agent)
            local = np.array([[self.pool.addr(slot), ref.nbytes, 0]], dtype=np.uint64)
            remote = np.array([[ref.addr, ref.nbytes, ref.device_id]], dtype=np.uint64)
            await self.agent.transfer("READ", peer, local, remote, release_tag(ref.handle), self.timeout)
            out = self.pool.get(slot, ref.nbytes, DTYPES[ref.dtype], ref.shape)
        except TransferFailed as e:
            READS.labels("failed").inc()
            raise TransferFailed(f"reading image embeddings from {ref.agent}: {e.message}") from e
        finally:
            async with self._free:
                self.pool.free(slot)
                self._free.notify()
        READS.labels("ok").inc()
        self.reads += 1
        return out

    async def _alloc(self) -> int:
        async with self._free:
            while (slot := self.pool.alloc()) is None:
                await self._free.wait()
            return slot
