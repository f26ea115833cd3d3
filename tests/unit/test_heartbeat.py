"""Lease heartbeats (shared.runtime.heartbeat): who goes silent, and when silence does not count."""

from __future__ import annotations

import asyncio

import pytest

from protocol import codec
from protocol.discovery import Heartbeat
from shared.runtime import heartbeat
from shared.runtime.heartbeat import HeartbeatSender, Liveness, backstop_ttl


class FakeNc:
    def __init__(self) -> None:
        self.is_connected = True
        self.is_closed = False
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, data: bytes) -> None:
        self.sent.append((subject, data))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(heartbeat.time, "monotonic", lambda: now[0])
    return now


def beat(*ids: str, ttl: float = 3.0) -> bytes:
    return codec.encode(Heartbeat(ids=list(ids), ttl=ttl))


def watching(live: Liveness, *ids: str) -> None:
    for iid in ids:
        live.seen(f"ns.backend.generate.{iid}")


def test_a_named_key_goes_silent_after_its_ttl_and_comes_back(clock: list[float]) -> None:
    live = Liveness(FakeNc(), ttl=3.0)  # type: ignore[arg-type]
    watching(live, "a", "b")
    assert live.on_heartbeat(beat("a", "b", "not-ours")) == ["ns.backend.generate.a", "ns.backend.generate.b"]
    clock[0] += 2.0
    live.on_heartbeat(beat("b"))
    assert live.silent() == []
    clock[0] += 1.5  # a: 3.5 s without a heartbeat, b: 1.5 s
    assert live.silent() == ["ns.backend.generate.a"]
    assert live.silent() == []  # reported once
    assert live.on_heartbeat(beat("a")) == ["ns.backend.generate.a"]  # the caller brings it back


def test_an_older_process_lives_by_its_puts_and_a_dead_key_found_at_start_goes(clock: list[float]) -> None:
    """No heartbeats: a put every ttl/3 is its owner alive; a key found in the bucket and never put again
    (its process died before this watcher started) goes after the watcher's ttl, not at its backstop."""
    live = Liveness(FakeNc(), ttl=3.0)  # type: ignore[arg-type]
    watching(live, "old", "dead")  # both in the bucket when the watch began
    silent: list[str] = []
    for _ in range(10):  # the older process puts its key every second
        clock[0] += 1.0
        live.seen("ns.backend.generate.old")
        silent += live.silent()
    assert silent == ["ns.backend.generate.dead"]


def test_silence_while_our_own_connection_is_down_does_not_count(clock: list[float]) -> None:
    nc = FakeNc()
    live = Liveness(nc, ttl=3.0)  # type: ignore[arg-type]
    watching(live, "a")
    live.on_heartbeat(beat("a"))
    nc.is_connected = False
    clock[0] += 10
    assert live.silent() == []
    nc.is_connected = True
    clock[0] += 2.0  # a fresh ttl from the outage's end
    assert live.silent() == []
    clock[0] += 1.5
    assert live.silent() == ["ns.backend.generate.a"]


def test_a_forgotten_key_is_not_reported(clock: list[float]) -> None:
    live = Liveness(FakeNc(), ttl=3.0)  # type: ignore[arg-type]
    watching(live, "a")
    live.on_heartbeat(beat("a"))
    live.forget("ns.backend.generate.a")  # deleted in the bucket (a drain): the delete itself tells the watcher
    clock[0] += 10
    assert live.silent() == []


async def test_one_message_names_every_key_of_the_process() -> None:
    nc = FakeNc()
    sender = HeartbeatSender(nc, "shoal.ns.hb", ttl=3.0)  # type: ignore[arg-type]
    for i in range(500):
        sender.add(f"ns.backend.generate.{i:016x}")
        sender.add(f"ns.backend.{i:016x}")  # its model card: the same id
    await asyncio.sleep(0)  # the first beat goes out at once
    sender.discard("ns.backend.generate.0000000000000000")  # the card still holds id 0
    sender.discard("ns.backend.0000000000000001")
    sender.discard("ns.backend.generate.0000000000000001")
    await sender.beat()
    await sender.stop()
    assert len(nc.sent) == 2 and {s for s, _ in nc.sent} == {"shoal.ns.hb"}
    assert len(codec.decode(nc.sent[0][1], Heartbeat).ids) == 500
    assert len(codec.decode(nc.sent[1][1], Heartbeat).ids) == 499


def test_the_kv_ttl_is_a_backstop_longer_than_the_lease() -> None:
    assert backstop_ttl(3.0) == 30.0 and backstop_ttl(15.0) == 60.0
