"""Session affinity shared through JetStream KV: two routers (two frontends) agree on every session's worker;
a session whose worker dies moves once, for both; malformed records are counted and overwritten."""

from __future__ import annotations

import asyncio

from protocol import codec, subjects
from protocol.sessions import SessionRecord
from shared.cluster.natsd import NatsServer
from shared.config.args import NatsOptions
from shared.routing.options import RouterOptions
from shared.routing.session_book import MALFORMED
from shared.routing.shared_affinity import SharedSessionAffinity
from shared.runtime import Runtime

NS = "sessions"
A, B, C = "a" * 16, "b" * 16, "c" * 16
WORKERS = [A, B, C]


async def _router(url: str, name: str) -> tuple[Runtime, SharedSessionAffinity]:
    rt = await Runtime.connect(NatsOptions(url=url), NS, name)
    r = RouterOptions(mode="random", session_ttl=60).make(runtime=rt, component="backend", page_size=16)
    assert isinstance(r, SharedSessionAffinity)
    for w in WORKERS:
        r.add_instance(w)
    await r.start()
    return rt, r


async def _run(url: str) -> None:
    (rt1, r1), (rt2, r2) = await _router(url, "fe1"), await _router(url, "fe2")
    try:
        # 40 sessions x 6 turns, alternating routers: every turn on the session's first worker
        first: dict[str, str] = {}
        for turn in range(6):
            for s in range(40):
                r = (r1, r2)[(s + turn) % 2]
                d = await r.admit(f"s{s}-t{turn}", [1, 2, 3], WORKERS, session_id=f"s{s}")
                r.finished(f"s{s}-t{turn}")
                assert first.setdefault(f"s{s}", d.instance_id) == d.instance_id, (s, turn)
        # the worker of some sessions dies: both routers get turns of them at once; each moves once
        gone = first["s0"]
        alive = [w for w in WORKERS if w != gone]
        moved = [s for s, w in first.items() if w == gone]
        for r in (r1, r2):
            r.remove_instance(gone)
        pairs = await asyncio.gather(*(asyncio.gather(r1.admit(f"{s}-x1", [1], alive, session_id=s),
                                                      r2.admit(f"{s}-x2", [1], alive, session_id=s))
                                       for s in moved))
        kv = await rt1.discovery.bucket(subjects.SESSIONS_BUCKET)
        for s, (d1, d2) in zip(moved, pairs, strict=True):
            assert d1.instance_id == d2.instance_id != gone, s
            rec = codec.decode((await kv.get(subjects.session_key(NS, "backend", s))).value, SessionRecord)
            assert (rec.worker, rec.moves) == (d1.instance_id, 1), s
        # a malformed record: counted, ignored, overwritten by the next request of that session
        before = MALFORMED._value.get()
        await kv.put(subjects.session_key(NS, "backend", "s1"), b"\xc1 not a record")
        for _ in range(100):
            if MALFORMED._value.get() > before:
                break
            await asyncio.sleep(0.02)
        assert MALFORMED._value.get() > before
        d = await r2.admit("s1-y", [1], alive, session_id="s1")
        assert d.instance_id in alive
        rec = codec.decode((await kv.get(subjects.session_key(NS, "backend", "s1"))).value, SessionRecord)
        assert rec.worker == d.instance_id
    finally:
        for r in (r1, r2):
            await r.stop()
        await rt1.close()
        await rt2.close()


def test_two_routers_share_sessions_and_a_dead_workers_sessions_move_once(nats_server: NatsServer) -> None:
    asyncio.run(_run(nats_server.url))
