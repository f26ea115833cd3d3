"""The planner with its local connector on real processes: load adds a worker that registers; when the
load goes, that worker drains (SIGTERM) with a request in flight, and the request completes."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from services.frontend.http_errors import WORKER_HEADER
from services.planner.capacity import DECODE_TPS
from shared.cluster.procs import spawn
from tests.integration.test_faults import health

SLOW = "0.1"  # mock engine: 50 ms a step, 20 tokens/s per request


def test_planner_adds_a_worker_under_load_and_drains_it_after(cluster, tmp_path):
    cluster.worker("--speedup-ratio", SLOW)
    cluster.frontend()
    cluster.wait_models()
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"*": {DECODE_TPS: 50}}))  # one worker: 50 tokens/s at the targets
    planner = spawn("planner", "planner", [
        *cluster.common, "--connector", "local", "--worker-log-dir", str(cluster.log_dir),
        "--worker-args", f"--engine mock --model-path {cluster.model} --speedup-ratio {SLOW}",
        "--profile", str(profile), "--interval", "0.5", "--scale-down-intervals", "2", "--max-workers", "2"],
        cluster.log_dir)
    cluster.procs.append(planner)
    planner.wait_ready(30)

    async def scenario() -> tuple[str, str, dict, list[str]]:
        first = await served_by(cluster.url, cluster.model_name, 1)
        async with aiohttp.ClientSession() as s:
            seen: set[str] = set()
            stop = asyncio.Event()

            async def client() -> None:  # 20 tokens/s each: six of them want 120/s, two workers' worth
                while not stop.is_set():
                    seen.add(await served_by(cluster.url, cluster.model_name, 40, s))

            load = [asyncio.create_task(client()) for _ in range(6)]
            t0 = time.monotonic()
            while not seen - {first} and time.monotonic() - t0 < 25:
                await asyncio.sleep(0.1)
            assert seen - {first}, f"no second worker served anything:\n{cluster.logs()}"
            added = (seen - {first}).pop()
            # a long request on the added worker, then the load goes: the planner drains that worker
            held = await stream_on(s, cluster.url, cluster.model_name, added)
            stop.set()
            await asyncio.gather(*load)
            finish, usage = await read_stream(held)
            assert "worker_draining" in planner.log_path.read_text(), "the request ended before the drain began"
            return added, held.headers[WORKER_HEADER], (finish, usage), _planner_events(planner.log_path)

    added, server, (finish, usage), events = asyncio.run(scenario())
    assert server == added  # it ran to the end where it started: drained, not migrated
    assert usage["completion_tokens"] == 100 and finish == ["length"]
    assert events.index("worker_started") < events.index("worker_draining") < events.index("worker_stopped")
    assert health(cluster.url)["instances"] == 1


async def served_by(url: str, model: str, n: int, session: aiohttp.ClientSession | None = None) -> str:
    """The instance that served one completion of `n` tokens (which must all arrive)."""
    async with contextlib_session(session) as s:
        body = {"model": model, "prompt": "load", "max_tokens": n, "min_tokens": n}
        async with s.post(url + "/v1/completions", json=body) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["usage"]["completion_tokens"] == n
            return r.headers[WORKER_HEADER]


async def stream_on(s: aiohttp.ClientSession, url: str, model: str, worker: str) -> aiohttp.ClientResponse:
    """A streamed completion of 100 tokens that `worker` serves (round-robin: a few tries at most)."""
    body = {"model": model, "prompt": "in flight", "max_tokens": 100, "min_tokens": 100, "stream": True,
            "stream_options": {"include_usage": True}}
    for _ in range(10):
        r = await s.post(url + "/v1/completions", json=body)
        assert r.status == 200, await r.text()
        if r.headers[WORKER_HEADER] == worker:
            return r
        r.close()  # another worker's: the client leaves, the request is cancelled
    raise AssertionError(f"round-robin never reached {worker}")


async def read_stream(r: aiohttp.ClientResponse) -> tuple[list[str], dict]:
    """The stream's finish reasons and its usage."""
    finish, usage = [], {}
    async with r:
        async for raw in r.content:
            if raw.startswith(b"data: {"):
                data = json.loads(raw[6:])
                assert "error" not in data, data
                finish += [ch["finish_reason"] for ch in data["choices"] if ch.get("finish_reason")]
                usage = data.get("usage") or usage
    return finish, usage


def contextlib_session(session: aiohttp.ClientSession | None):
    import contextlib

    return contextlib.nullcontext(session) if session is not None else aiohttp.ClientSession()


def _planner_events(log_path) -> list[str]:
    """The planner's connector events, in order, once the drained worker has exited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20:
        text = log_path.read_text(errors="replace")
        if "worker_stopped" in text:
            break
        time.sleep(0.1)
    return [e for line in text.splitlines() for e in ("worker_started", "worker_draining", "worker_stopped")
            if e in line]
