"""Receive SGLang's KV events over ZMQ (pyzmq, asyncio) and hand them on as shoal's.

SGLang's scheduler publishes on a PUB socket (see `wire.py` for the frames).
It binds when its endpoint is a wildcard (`*`, `0.0.0.0`, anything with
`::`) or ipc, and connects otherwise; the subscriber does the opposite. With
data parallelism rank r publishes on port + r. When a sequence number is
skipped the subscriber asks the replay socket (a ROUTER) for the missing
batches before going on, so events reach the sink complete and in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio

from shared.engine.sglang.args import KvEventsSettings
from shared.engine.sglang.wire import END_OF_REPLAY, WireBatch, WireFormatError, decode_batch, decode_seq, encode_seq
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger

log = get_logger("shoal.sglang.events")

REPLAY_TIMEOUT_S = 2.0
_WILDCARD_HOSTS = ("*", "0.0.0.0", "")


@dataclass(frozen=True)
class ZmqAddress:
    """Where our socket goes: `url` to connect to, or to bind when `bind`; `ipv6` to enable on the socket."""

    url: str
    bind: bool = False
    ipv6: bool = False


def tcp_url(host: str, port: int) -> str:
    """A tcp endpoint, IPv6 hosts in brackets (`tcp://[::1]:5557`)."""
    host = host.strip("[]")
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def split_tcp(endpoint: str) -> tuple[str, int]:
    """(host without brackets, port) of `tcp://host:port`."""
    rest = endpoint.removeprefix("tcp://")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{endpoint!r} has no port")
    return host.strip("[]"), int(port)


def publisher_binds(endpoint: str) -> bool:
    """SGLang's rule for its PUB socket: bind for wildcards and ipc/inproc, connect otherwise."""
    return ("*" in endpoint or "::" in endpoint or "0.0.0.0" in endpoint
            or endpoint.startswith(("ipc://", "inproc://")))


def subscriber_address(endpoint: str, dp_rank: int = 0, publisher_side_binds: bool | None = None) -> ZmqAddress:
    """Our side of SGLang's `endpoint` for DP rank `dp_rank`."""
    binds = publisher_binds(endpoint) if publisher_side_binds is None else publisher_side_binds
    if endpoint.startswith("inproc://"):
        return ZmqAddress(endpoint + (f"_dp{dp_rank}" if dp_rank else ""), bind=not binds)
    if endpoint.startswith("ipc://"):
        if dp_rank:
            raise ValueError(f"SGLang cannot offset ipc endpoint {endpoint} for DP rank {dp_rank}: use tcp")
        return ZmqAddress(endpoint, bind=not binds)
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"unsupported ZMQ endpoint {endpoint!r} (tcp, ipc or inproc)")
    host, port = split_tcp(endpoint)
    port += dp_rank
    if not binds:  # SGLang connects to host:port, so we listen there
        return ZmqAddress(tcp_url(host, port), bind=True, ipv6=":" in host)
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return ZmqAddress(tcp_url(host, port), ipv6=":" in host)


def replay_address(endpoint: str, dp_rank: int = 0) -> ZmqAddress:
    """SGLang always binds its replay ROUTER, so we connect (wildcards become loopback)."""
    return subscriber_address(endpoint, dp_rank, publisher_side_binds=True)


BatchHandler = Callable[[WireBatch], None]


class KvEventSubscriber:
    """One DP rank's KV events: SUB socket, gap detection, replay; `on_batch` gets every batch once, in order."""

    def __init__(self, settings: KvEventsSettings, on_batch: BatchHandler, dp_rank: int = 0,
                 ctx: zmq.asyncio.Context | None = None) -> None:
        self.settings = settings
        self.on_batch = on_batch
        self.dp_rank = dp_rank
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self._sub: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.next_seq = 0
        self.lost = 0  # batches neither received nor replayed

    async def start(self) -> None:
        addr = subscriber_address(self.settings.endpoint, self.dp_rank)
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.IPV6, int(addr.ipv6))
        sub.setsockopt(zmq.SUBSCRIBE, self.settings.topic.encode())
        (sub.bind if addr.bind else sub.connect)(addr.url)
        self._sub = sub
        self._task = asyncio.create_task(self._run(), name=f"sglang-kv-events-{self.dp_rank}")
        log.info("kv_events_subscribed", endpoint=addr.url, bind=addr.bind, dp_rank=self.dp_rank)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None

    async def _run(self) -> None:
        assert self._sub is not None
        while True:
            frames = await self._sub.recv_multipart()
            if len(frames) != 3:
                log.warning("kv_event_bad_frames", frames=len(frames))
                continue
            try:
                seq = decode_seq(frames[1])
            except WireFormatError as e:
                log.warning("kv_event_bad_seq", error=str(e))
                continue
            await self.handle(seq, frames[2])

    async def handle(self, seq: int, payload: bytes) -> None:
        """One published batch: skip a repeat, replay what it skipped, then deliver it."""
        if seq < self.next_seq:
            return
        if seq > self.next_seq:
            for old_seq, old_payload in await self._replay(self.next_seq, seq):
                if old_seq == self.next_seq:
                    self._deliver(old_seq, old_payload)
            if seq > self.next_seq:
                self.lost += seq - self.next_seq
                log.warning("kv_events_lost", first=self.next_seq, count=seq - self.next_seq, dp_rank=self.dp_rank)
        self._deliver(seq, payload)

    def _deliver(self, seq: int, payload: bytes) -> None:
        self.next_seq = seq + 1
        try:
            batch = decode_batch(payload)
        except WireFormatError as e:
            self.lost += 1
            log.warning("kv_event_undecodable", seq=seq, error=str(e))
            return
        try:
            self.on_batch(batch)
        except Exception:
            log.exception("kv_event_sink_failed", seq=seq)

    async def _replay(self, start: int, upto: int) -> list[tuple[int, bytes]]:
        """Batches start..upto-1 from SGLang's replay buffer (what it still holds)."""
        if not self.settings.replay_endpoint:
            return []
        addr = replay_address(self.settings.replay_endpoint, self.dp_rank)
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, int(addr.ipv6))
        sock.connect(addr.url)
        got: list[tuple[int, bytes]] = []
        try:
            await sock.send_multipart([b"", encode_seq(start)])
            async with asyncio.timeout(REPLAY_TIMEOUT_S):
                while True:
                    frames = await sock.recv_multipart()
                    seq = decode_seq(frames[-2])
                    if seq == END_OF_REPLAY:
                        break
                    if start <= seq < upto:
                        got.append((seq, frames[-1]))
        except (TimeoutError, WireFormatError, IndexError) as e:
            log.warning("kv_event_replay_failed", start=start, upto=upto, error=repr(e))
        finally:
            sock.close(linger=0)
        log.info("kv_events_replayed", start=start, upto=upto, got=len(got))
        return sorted(got)
