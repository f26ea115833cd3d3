"""Session affinity on a real cluster: the requests of one session land on one worker while it lives, and on
one other worker after it is killed (kill -9), although the frontend routes round-robin."""

from __future__ import annotations

import json
import urllib.request

from services.frontend.http_errors import WORKER_HEADER
from services.frontend.session import SESSION_HEADER
from tests.integration.test_canary import instance_id


def served_by(base: str, model: str, session: str | None, i: int) -> str:
    """Send one completion (of the session, if named); the instance that served it."""
    body = {"model": model, "prompt": f"turn {i} of the conversation", "max_tokens": 2}
    headers = {"Content-Type": "application/json", **({SESSION_HEADER: session} if session else {})}
    req = urllib.request.Request(base + "/v1/completions", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.loads(r.read())["usage"]["completion_tokens"] == 2
        return r.headers[WORKER_HEADER]


def test_a_session_sticks_to_its_worker_and_moves_when_it_dies(cluster):
    workers = [cluster.worker(name=f"w{i}", wait=False) for i in range(3)]
    for w in workers:
        w.wait_ready(120)
    cluster.frontend("--router-mode", "round-robin", "--router-session-affinity-ttl-secs", "60")
    cluster.wait_models(3)
    by_id = {instance_id(w): w for w in workers}
    send = lambda session, i: served_by(cluster.url, cluster.model_name, session, i)  # noqa: E731

    assert len({send(None, i) for i in range(6)}) == 3  # without a session: round-robin over all three
    first = [send("chat-1", i) for i in range(20)]
    assert len(set(first)) == 1
    assert len({send("chat-2", i) for i in range(3)}) == 1  # another session sticks too (anywhere)

    victim = by_id[first[0]]
    victim.kill()  # kill -9: its discovery record lingers until its lease expires
    after = [send("chat-1", 20 + i) for i in range(10)]
    assert len(set(after)) == 1 and after[0] != first[0] and by_id[after[0]].alive()
