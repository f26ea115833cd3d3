"""One NIXL agent per worker process: its KV tensors registered once, writes, notifications.

The agent is not thread-safe, so every NIXL call runs on one dedicated thread;
the event loop only awaits them. A write in flight is never abandoned: the
caller may be cancelled, but the write runs on until it completes or times
out, so the blocks it reads and writes are not reused under it.

    agent = KvAgent(name=instance_id)
    await agent.start(engine.kv_tensors(), engine.bytes_per_block)
    peer = await agent.add_peer(record)            # an AgentRecord from the directory
    await agent.write(peer, src_blocks, dst_blocks, notif=b"done:7", timeout=5)
    notifs = await agent.notifications()            # on the receiving side
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from protocol.transfer import AgentRecord
from shared.errors import TransferFailed
from shared.telemetry.logging import get_logger
from shared.transfer.descriptors import write_rows
from shared.transfer.nixl import nixl_agent, nixl_agent_config

log = get_logger("shoal.transfer")

T = TypeVar("T")
SPIN_S = 0.002  # a write is first watched on the agent's thread (most end within this)...
POLL_S = 0.001  # ...then checked from the loop this often
# Progress a standalone notification this long right after sending it (on the NIXL thread). A send
# not through by then (a first message to a peer sets up its UCX connection; a loaded machine) is
# progressed in the background every NOTIFY_POLL_S for NOTIFY_LINGER_S: there is no progress thread.
NOTIFY_PROGRESS_S = 0.01
NOTIFY_POLL_S = 0.005
NOTIFY_LINGER_S = 2.0


class KvAgent:
    def __init__(self, name: str, backends: tuple[str, ...] = ("UCX",)) -> None:
        self.name = name
        self.backends = list(backends)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nixl")
        self._agent: Any = None
        self._record: AgentRecord | None = None
        self._peers: dict[str, AgentRecord] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._received: list[bytes] = []  # taken while progressing a send; handed out by notifications()
        self._linger: asyncio.Task[None] | None = None
        self._linger_until = 0.0

    # ---- lifecycle ----------------------------------------------------------------
    async def start(self, tensors: list[torch.Tensor], bytes_per_block: int) -> AgentRecord:
        """Create the agent and register every KV tensor (once, for the life of the process)."""
        # no progress thread: it busy-polls a core; NIXL progresses in our own calls (writes, notifications)
        conf = nixl_agent_config(enable_prog_thread=False, backends=self.backends)
        self._agent = await self._call(nixl_agent, self.name, conf)
        await self._call(self._agent.register_memory, tensors)
        first = tensors[0]
        self._record = AgentRecord(
            name=self.name, metadata=await self._call(self._agent.get_agent_metadata),
            layer_addrs=[t.data_ptr() for t in tensors], bytes_per_block=bytes_per_block,
            num_blocks=first.shape[0], mem_type="DRAM" if first.device.type == "cpu" else "VRAM",
            device_id=max(first.get_device(), 0),
        )
        log.info("nixl_agent_ready", agent=self.name, layers=len(tensors), blocks=first.shape[0])
        return self._record

    async def stop(self) -> None:
        for task in list(self._writes):  # let writes in flight end first
            with contextlib.suppress(BaseException):
                await task
        if self._linger is not None:
            self._linger.cancel()
            await asyncio.gather(self._linger, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def record(self) -> AgentRecord:
        if self._record is None:
            raise TransferFailed("NIXL agent not started")
        return self._record

    # ---- peers --------------------------------------------------------------------
    def peer(self, name: str) -> AgentRecord | None:
        """A peer already loaded by add_peer."""
        return self._peers.get(name)

    async def add_peer(self, record: AgentRecord) -> AgentRecord:
        if record.name not in self._peers:
            try:
                await self._call(self._agent.add_remote_agent, record.metadata)
            except Exception as e:
                raise TransferFailed(f"cannot load NIXL metadata of {record.name}: {e}") from e
            self._peers[record.name] = record
        return self._peers[record.name]

    async def forget_peer(self, name: str) -> None:
        if self._peers.pop(name, None) is not None:
            with contextlib.suppress(Exception):
                await self._call(self._agent.remove_remote_agent, name)

    # ---- transfers ----------------------------------------------------------------
    async def write(self, peer: AgentRecord, src: list[int], dst: list[int], notif: bytes,
                    timeout: float) -> None:
        """Copy local blocks `src` into the peer's blocks `dst`; the peer gets `notif` after the data.

        Raises TransferFailed on error or after `timeout` seconds. Cancelling the caller
        waits for the write to end (it is bounded by `timeout`) before re-raising.
        """
        src_rows, dst_rows = write_rows(self.record, peer, src, dst)
        await self.transfer("WRITE", peer, src_rows, dst_rows, notif, timeout)

    async def transfer(self, op: str, peer: AgentRecord, local_rows: Any, remote_rows: Any, notif: bytes,
                       timeout: float) -> None:
        """A WRITE (local -> peer) or READ (peer -> local) of descriptor rows `(addr, len, dev)`; the peer
        gets `notif` once it is done. Same guarantees as write(): bounded, never abandoned mid-flight."""
        task = asyncio.create_task(self._xfer(op, peer, local_rows, remote_rows, notif,
                                              time.monotonic() + timeout))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task
            raise

    async def _xfer(self, op: str, peer: AgentRecord, src_rows: Any, dst_rows: Any, notif: bytes,
                    deadline: float) -> None:
        handle, state = await self._call(self._post_write, src_rows, dst_rows, peer.name, notif, op, peer.mem_type)
        try:
            while state == "PROC":
                if time.monotonic() > deadline:
                    raise TransferFailed(f"KV {op} with {peer.name} timed out")
                await asyncio.sleep(POLL_S)
                state = await self._call(self._spin, handle, time.monotonic() + SPIN_S)
            if state != "DONE":
                raise TransferFailed(f"KV {op} with {peer.name} failed")
        finally:
            with contextlib.suppress(Exception):
                await self._call(self._agent.release_xfer_handle, handle)

    def _post_write(self, src_rows: Any, dst_rows: Any, peer: str, notif: bytes, op: str = "WRITE",
                    peer_mem: str | None = None) -> tuple[Any, str]:
        a = self._agent
        try:
            handle = a.initialize_xfer(op, a.get_xfer_descs(src_rows, self.record.mem_type),
                                       a.get_xfer_descs(dst_rows, peer_mem or self.record.mem_type), peer, notif)
        except Exception as e:
            raise TransferFailed(f"cannot prepare KV write to {peer}: {e}") from e
        state = a.transfer(handle)
        if state == "ERR":
            a.release_xfer_handle(handle)
            raise TransferFailed(f"KV write to {peer} refused")
        return handle, self._spin(handle, time.monotonic() + SPIN_S) if state == "PROC" else state

    def _spin(self, handle: Any, until: float) -> str:
        state = self._agent.check_xfer_state(handle)
        while state == "PROC" and time.monotonic() < until:
            state = self._agent.check_xfer_state(handle)
        return state

    async def notify(self, peer: str, msg: bytes) -> None:
        """A notification not bound to a transfer (best effort)."""
        try:
            await self._call(self._send_notif, peer, msg)
        except Exception as e:
            log.warning("nixl_notify_failed", peer=peer, error=str(e))
            return
        self._linger_until = time.monotonic() + NOTIFY_LINGER_S
        if self._linger is None or self._linger.done():
            self._linger = asyncio.create_task(self._progress_while_lingering(), name=f"nixl-linger:{self.name}")

    async def _progress_while_lingering(self) -> None:
        """Keep progressing this agent's sends for a while after a standalone notification."""
        while time.monotonic() < self._linger_until:
            await asyncio.sleep(NOTIFY_POLL_S)
            with contextlib.suppress(Exception):
                await self._call(self._progress)

    def _progress(self) -> None:
        self._received.extend(self._take_notifs())

    def _send_notif(self, peer: str, msg: bytes) -> None:
        self._agent.send_notif(peer, msg)
        until = time.monotonic() + NOTIFY_PROGRESS_S
        while time.monotonic() < until:  # no progress thread: progress the send ourselves
            self._progress()
            time.sleep(0.0002)

    async def notifications(self) -> list[bytes]:
        """Notifications received since the last call, from any peer."""
        return await self._call(self._take_notifs)

    def _take_notifs(self) -> list[bytes]:
        got: dict[str, list[bytes]] = self._agent.get_new_notifs()
        out, self._received = self._received, []
        return out + [m for msgs in got.values() for m in msgs]

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
