"""NATS access control: the sample config (deploy/nats/) with one user per role, on real services.

The nats-server runs a config rendered from the same code as deploy/nats/nats-server.conf, with
random passwords; the frontend and a mock worker each connect as their own user and serve a
completion; the worker's credentials cannot read the frontend's inboxes or cancel another
component's requests; wrong credentials cannot connect; no password reaches a log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from protocol import subjects
from shared.cluster.natsd import NatsServer, free_port, wait_port
from shared.cluster.procs import ServiceProc, spawn
from shared.config.args import NatsOptions
from shared.runtime import Runtime
from shared.runtime.errors import NatsUnavailable
from tests.integration.test_scale_zero import health

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "nats"))
import render_config  # noqa: E402

NS = "authtest"


def test_sample_config_is_rendered_from_the_template() -> None:
    committed = (ROOT / "deploy" / "nats" / "nats-server.conf").read_text()
    fix = "python deploy/nats/render_config.py > deploy/nats/nats-server.conf"
    assert committed == render_config.render(), f"the sample is stale; run: {fix}"
    assert (render_config.PREFIX, render_config.INSTANCES_BUCKET, render_config.MODELS_BUCKET,
            render_config.ARTIFACTS_STORE) == (subjects.PREFIX, subjects.INSTANCES_BUCKET, subjects.MODELS_BUCKET,
                                               subjects.ARTIFACTS_STORE)
    assert f"{subjects.PREFIX}-kv-{NS}" == subjects.kv_events_stream(NS)
    assert render_config.NIXL_BUCKET == subjects.NIXL_BUCKET
    assert render_config.SESSIONS_BUCKET == subjects.SESSIONS_BUCKET


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[tuple[NatsServer, dict[str, str]]]:
    # urlsafe, and leading "-" on purpose: on a command line only --flag=value passes such a password
    passwords = {role: "-" + secrets.token_urlsafe(18) for role in render_config.ROLES}
    conf = render_config.write(tmp_path / "nats.conf", namespace=NS, passwords=passwords, listen=None)
    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log", config=conf).start()
    try:
        asyncio.run(_provision(server, passwords["setup"]))  # only the setup user makes buckets and streams
        yield server, passwords
    finally:
        server.stop()


def _opts(server: NatsServer, user: str, password: str) -> NatsOptions:
    return NatsOptions(url=server.url, user=user, password=password)


async def _provision(server: NatsServer, password: str) -> None:
    from shared.runtime.provision import provision

    rt = await Runtime.connect(_opts(server, "setup", password), NS, "setup")
    try:
        await provision(rt)
    finally:
        await rt.close()


def _tails(procs: list[ServiceProc], server: NatsServer) -> str:
    nats_log = server.log_file.read_text(errors="replace")[-3000:] if server.log_file else ""
    return "\n".join(f"--- {p.name} ---\n{p.tail(40)}" for p in procs) + f"\n--- nats ---\n{nats_log}"


def _complete(port: int, model: str) -> dict:
    body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 8}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())


def test_roles_serve_and_are_confined(secure: tuple[NatsServer, dict[str, str]], tiny_model: Path,
                                      tmp_path: Path) -> None:
    server, pw = secure
    logs = tmp_path / "logs"
    procs: list[ServiceProc] = []
    common = ["--nats-url", server.url, "--namespace", NS]
    try:
        # (a) each service with its own user; the password travels in the environment
        worker = spawn("worker", "decode", [*common, "--engine", "mock", "--model-path", str(tiny_model),
                                            "--nats-user", "worker"], logs, env={"NATS_PASSWORD": pw["worker"]})
        procs.append(worker)
        worker.wait_ready(60)
        http_port = free_port()
        # the frontend's password on the command line: it must not reach the log either
        frontend = spawn("frontend", "frontend", [*common, "--http-port", str(http_port), "--nats-user", "frontend",
                                                  f"--nats-password={pw['frontend']}", "--router-mode", "kv"], logs)
        procs.append(frontend)
        router = spawn("router", "router", [*common, "--nats-user", "router"], logs,
                       env={"NATS_PASSWORD": pw["router"]})
        procs.append(router)
        planner = spawn("planner", "planner", [*common, "--nats-user", "planner", "--dry-run", "--ttft-p90-ms", "500",
                                               "--interval", "0.5"], logs, env={"NATS_PASSWORD": pw["planner"]})
        procs.append(planner)
        frontend.wait_ready(60)
        router.wait_ready(60)
        planner.wait_ready(60)
        wait_port("127.0.0.1", http_port)
        out = None
        for _ in range(100):  # the model card may arrive a moment after ready
            with contextlib.suppress(urllib.error.HTTPError):
                out = _complete(http_port, tiny_model.name)
                break
            time.sleep(0.1)
        assert out is not None and out["choices"][0]["text"], _tails(procs, server)
        assert out["usage"]["completion_tokens"] > 0

        # (b) confinement, observed with the worker's own credentials
        asyncio.run(_confinement(server, pw, tiny_model.name, http_port))

        # nothing in the logs of the services about permissions, and no secret anywhere
        text = {p.name: p.log_path.read_text(errors="replace") for p in procs}
        for name, t in text.items():
            lines = [ln for ln in t.lower().splitlines() if "permissions violation" in ln]
            assert not lines, f"{name} hit a permission it needs:\n{t[-3000:]}"
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop(timeout=10)
    # (c) no secret in any log, after shutdown too
    every_log = [*logs.glob("*.log"), tmp_path / "nats.log"]
    for path in every_log:
        t = path.read_text(errors="replace")
        for role, secret in pw.items():
            assert secret not in t, f"the {role} password appears in {path.name}"


async def _confinement(server: NatsServer, pw: dict[str, str], model: str, http_port: int) -> None:
    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    spy = await nats.connect(server.url, user="worker", password=pw["worker"], error_cb=on_error,
                             allow_reconnect=False)
    try:
        # the worker's user tries to read the frontend's request streams while a completion runs:
        # every subscription outside its own _INBOX.decode.> is refused
        got: list[str] = []

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            got.append(msg.subject)

        await spy.subscribe(subjects.inbox_prefix("frontend", "abcdef012345") + ".*", cb=on_msg)
        await spy.subscribe("_INBOX.frontend.>", cb=on_msg)
        await spy.subscribe("_INBOX.>", cb=on_msg)
        await spy.flush()
        out = await asyncio.to_thread(_complete, http_port, model)
        assert out["usage"]["completion_tokens"] > 0
        await asyncio.sleep(0.2)
        assert not [s for s in got if s.startswith("_INBOX.frontend.")], "the worker's user read the frontend's inbox"
        lowered = [e.lower() for e in errors]
        refused = [e for e in lowered if "permissions violation for subscription" in e]
        assert len(refused) == 3 and any("_inbox.frontend.>" in e for e in refused), errors

        # ... and to cancel requests on another component's control subject
        before = len(errors)
        await spy.publish(subjects.control_subject(NS, "prefill", "0123456789abcdef"), b"x")
        await spy.publish(subjects.control_subject(NS, "router", "0123456789abcdef"), b"x")
        # ... or to publish requests to a worker, or another role's KV events
        await spy.publish(subjects.endpoint_subject(NS, "backend", "generate"), b"x", reply="_INBOX.x")
        await spy.publish(subjects.kv_events_subject(NS, "prefill", "0123456789abcdef"), b"x")
        await spy.flush()
        await asyncio.sleep(0.3)
        viol = [e for e in errors[before:] if "permissions violation for publish" in e.lower()]
        assert len(viol) == 4, errors[before:]
        assert spy.is_connected  # a violation is refused, the connection stays up
    finally:
        await spy.close()

    # wrong credentials cannot connect at all, and say so at once (refused, not unreachable)
    for opts in (_opts(server, "worker", "not-the-password"), _opts(server, "nobody", pw["worker"]),
                 NatsOptions(url=server.url)):
        t0 = time.monotonic()
        with pytest.raises(NatsUnavailable, match="refused"):
            await Runtime.connect(opts, NS, "intruder")
        assert time.monotonic() - t0 < 2.0  # the default timeout is 5 s
    assert server.log_file is not None
    assert server.log_file.read_text().count("authentication error") >= 3


def _post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def test_embedding_diffusion_and_multimodal_roles_serve_within_their_permissions(
        secure: tuple[NatsServer, dict[str, str]], tiny_model: Path, tiny_vlm: Path, tmp_path: Path) -> None:
    """Each newer service under its own user: an embedding worker, a diffusion worker, E/PD (encode +
    processor in kv mode + an internal LLM worker on component vlm reading embeddings over NIXL) and a
    prefill/decode pair on component pd with the prefill router all answer, and neither the services nor
    nats-server report a permissions violation."""
    from shared.model.tiny import make_tiny
    from tests.images import png

    server, pw = secure
    logs = tmp_path / "logs"
    dllm = make_tiny(tmp_path / "tiny-dllm", diffusion=True)
    common = ["--nats-url", server.url, "--namespace", NS]
    http_port = free_port()
    plan = [("embedding", "embedding", ["--engine", "mock", "--model-path", str(tiny_model),
                                         "--served-model-name", "emb"]),
            ("diffusion", "diffusion", ["--model-path", str(dllm)]),
            ("encode", "encode", ["--model-path", str(tiny_vlm)]),
            ("processor", "processor", ["--model-path", str(tiny_vlm), "--router-mode", "kv",
                                        "--worker-component", "vlm"]),
            ("vlm_worker", "decode", ["--engine", "reference", "--internal", "--num-blocks", "128",
                                      "--component", "vlm", "--model-path", str(tiny_vlm)]),
            # a disaggregated pair on component pd, the decode worker asking the router for a prefill worker
            ("prefill", "prefill", ["--engine", "reference", "--num-blocks", "128", "--model-path", str(tiny_model),
                                    "--served-model-name", "tiny-pd"]),
            ("decode", "decode", ["--engine", "reference", "--num-blocks", "128", "--model-path", str(tiny_model),
                                  "--served-model-name", "tiny-pd", "--component", "pd",
                                  "--disaggregation-mode", "decode", "--prefill-router", "router"]),
            ("router", "router", ["--component", "router", "--worker-component", "prefill"]),
            ("frontend", "frontend", ["--http-port", str(http_port)])]
    procs: list[ServiceProc] = []
    try:
        for user, module, args in plan:
            procs.append(spawn(user, module, [*common, *args, "--nats-user", user], logs,
                               env={"NATS_PASSWORD": pw[user]}))
        for p in procs:
            p.wait_ready(120)
        wait_port("127.0.0.1", http_port)
        # random weights may sample an eos at any step: four tokens exactly, whatever is sampled
        four = {"max_tokens": 4, "ignore_eos": True}
        image = "data:image/png;base64," + base64.b64encode(png(1, (32, 32))).decode()
        calls = [("/v1/embeddings", {"model": "emb", "input": "hello"}),
                 ("/v1/completions", {"model": "tiny-pd", "prompt": "Hello", **four}),
                 ("/v1/completions", {"model": dllm.name, "prompt": "Hello", **four}),
                 ("/v1/chat/completions", {"model": tiny_vlm.name, **four, "messages": [
                     {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                                  {"type": "text", "text": "what is it?"}]}]})]
        for path, body in calls:
            out: dict | str = "no answer"
            for _ in range(100):  # a model card may arrive a moment after ready: 404 until then
                try:
                    out = _post(http_port, path, body)
                    break
                except urllib.error.HTTPError as e:
                    out = f"HTTP {e.code}: {e.read()[:300]!r}"
                    if e.code != 404:
                        break
                time.sleep(0.1)
            assert isinstance(out, dict), f"{path}: {out}\n{_tails(procs, server)}"
            assert out.get("data") or out["usage"]["completion_tokens"] == 4, out
        for p in procs:
            t = p.log_path.read_text(errors="replace")
            assert "permissions violation" not in t.lower(), f"{p.name} hit a permission it needs:\n{t[-3000:]}"
        assert server.log_file is not None
        nats_log = server.log_file.read_text(errors="replace")
        assert "permissions violation" not in nats_log.lower(), nats_log[-3000:]
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop(timeout=10)


def test_only_setup_shapes_streams_and_a_tampered_artifact_is_refused(
        secure: tuple[NatsServer, dict[str, str]], tiny_model: Path, tmp_path: Path) -> None:
    """Issue 22, finding 7: the planner cannot update (seal, redirect) a stream nor create one, a worker
    cannot purge or delete one; `shoal setup` (the setup user) provisions; a tokenizer artifact changed
    in the object store (a worker credential may write there) is refused by the frontend by its hash."""
    import subprocess

    server, pw = secure
    logs = tmp_path / "logs"
    common = ["--nats-url", server.url, "--namespace", NS]
    out = subprocess.run([sys.executable, "-m", "shared.cli", "setup", *common, "--nats-user", "setup"],
                         env={**os.environ, "NATS_PASSWORD": pw["setup"]}, capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and "KV_shoal-instances" in out.stdout, out.stderr[-2000:]
    procs: list[ServiceProc] = []
    try:
        worker = spawn("worker", "decode", [*common, "--engine", "mock", "--model-path", str(tiny_model),
                                            "--nats-user", "worker"], logs, env={"NATS_PASSWORD": pw["worker"]})
        procs.append(worker)
        worker.wait_ready(60)
        asyncio.run(_cannot_reshape(server, pw))
        asyncio.run(_tamper(server, pw))
        http_port = free_port()
        frontend = spawn("frontend", "frontend", [*common, "--http-port", str(http_port), "--nats-user", "frontend"],
                         logs, env={"NATS_PASSWORD": pw["frontend"]})
        procs.append(frontend)
        frontend.wait_ready(60)
        wait_port("127.0.0.1", http_port)
        for _ in range(100):
            if "tokenizer_artifact_mismatch" in frontend.log_path.read_text(errors="replace"):
                break
            time.sleep(0.1)
        assert "tokenizer_artifact_mismatch" in frontend.log_path.read_text(errors="replace"), _tails(procs, server)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/models", timeout=5) as r:
            assert json.loads(r.read())["data"] == []  # the model is not served with tampered files
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop(timeout=10)


async def _cannot_reshape(server: NatsServer, pw: dict[str, str]) -> None:
    instances = f"KV_{subjects.INSTANCES_BUCKET}"
    for user, subject, body in (
            ("planner", f"$JS.API.STREAM.UPDATE.{instances}", {"name": instances, "sealed": True}),
            ("planner", "$JS.API.STREAM.CREATE.spy", {"name": "spy",
                                                       "subjects": [f"{subjects.PREFIX}.{NS}.backend.>"]}),
            ("planner", f"$JS.API.STREAM.PURGE.{instances}", {}),
            ("worker", f"$JS.API.STREAM.DELETE.OBJ_{subjects.ARTIFACTS_STORE}", {}),
            ("worker", f"$JS.API.STREAM.PURGE.KV_{subjects.MODELS_BUCKET}", {}),
            ("worker", f"$JS.API.STREAM.UPDATE.{instances}", {"name": instances, "sealed": True}),
            ("frontend", f"$JS.API.STREAM.DELETE.{instances}", {})):
        errors: list[str] = []

        async def on_error(e: Exception, errors: list[str] = errors) -> None:
            errors.append(str(e).lower())

        nc = await nats.connect(server.url, user=user, password=pw[user], error_cb=on_error, allow_reconnect=False)
        try:
            with contextlib.suppress(Exception):
                await nc.request(subject, json.dumps(body).encode(), timeout=0.5)
            await nc.flush()
            await asyncio.sleep(0.1)
        finally:
            await nc.close()
        assert any("permissions violation for publish" in e for e in errors), (user, subject, errors)
    admin = await nats.connect(server.url, user="setup", password=pw["setup"], inbox_prefix="_INBOX.setup")
    try:
        js = admin.jetstream()
        assert not (await js.stream_info(instances)).config.sealed
        await js.stream_info(f"OBJ_{subjects.ARTIFACTS_STORE}")  # still there
        with pytest.raises(Exception, match="not found"):
            await js.stream_info("spy")
    finally:
        await admin.close()


async def _tamper(server: NatsServer, pw: dict[str, str]) -> None:
    """As a worker: the same artifact name, other (well-formed) tokenizer files: a chat template of its own."""
    from protocol import codec
    from shared.runtime.models import TokenizerFiles

    nc = await nats.connect(server.url, user="worker", password=pw["worker"], inbox_prefix="_INBOX.decode")
    try:
        store = await nc.jetstream().object_store(subjects.ARTIFACTS_STORE)
        names = [o.name for o in await store.list()]
        assert len(names) == 1 and names[0].startswith("tokenizer-"), names
        files = codec.decode((await store.get(names[0])).data or b"", TokenizerFiles).files
        config = json.loads(files["tokenizer_config.json"])
        config["chat_template"] = "{{ 'attacker template: ' + messages[0]['content'] }}"
        files["tokenizer_config.json"] = json.dumps(config).encode()
        # the new chunks and the object's meta go in; only purging the old chunks is refused (times out)
        with contextlib.suppress(nats.errors.TimeoutError):
            await store.put(names[0], codec.encode(TokenizerFiles(files=files)))
        assert b"attacker template" in ((await store.get(names[0])).data or b"")
    finally:
        await nc.close()


def test_scale_from_zero_under_roles(secure: tuple[NatsServer, dict[str, str]], tiny_model: Path,
                                     tmp_path: Path) -> None:
    """Issue 23 with access control on: the planner (its own user) parks the model and, on a frontend's cold
    start request, starts a worker that connects as the worker user (SHOAL_WORKER_NATS_*: the planner's own
    password is not passed on); the first request completes; nobody hits a permission."""
    server, pw = secure
    logs = tmp_path / "logs"
    common = ["--nats-url", server.url, "--namespace", NS]
    http_port = free_port()
    procs: list[ServiceProc] = []
    try:
        procs.append(spawn("frontend", "frontend", [*common, "--http-port", str(http_port), "--nats-user", "frontend",
                                                    "--cold-start-wait", "60"], logs,
                           env={"NATS_PASSWORD": pw["frontend"]}))
        procs.append(spawn("planner", "planner", [
            *common, "--nats-user", "planner", "--connector", "local", "--worker-log-dir", str(logs),
            "--worker-args", f"--engine mock --model-path {tiny_model}", "--min-workers", "0",
            "--scale-to-zero-idle", "1", "--interval", "0.3"], logs,
            env={"NATS_PASSWORD": pw["planner"], "SHOAL_WORKER_NATS_USER": "worker",
                 "SHOAL_WORKER_NATS_PASSWORD": pw["worker"]}))
        for p in procs:
            p.wait_ready(60)
        wait_port("127.0.0.1", http_port)

        url = f"http://127.0.0.1:{http_port}"
        end = time.monotonic() + 60  # the planner learns the model (one worker), parks it, drains to zero
        while not (tiny_model.name in (h := health(url))["models"] and h["instances"] == 0):
            assert time.monotonic() < end, _tails(procs, server)
            time.sleep(0.2)
        try:
            out = _post(http_port, "/v1/completions", {"model": tiny_model.name, "prompt": "Hello", "max_tokens": 4,
                                                       "ignore_eos": True})
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{e.code}: {e.read()[:300]!r}\n{_tails(procs, server)}") from e
        assert out["usage"]["completion_tokens"] == 4
        workers = sorted(logs.glob("planner-worker*.log"))
        assert len(workers) >= 2  # the one that learnt the card, and the cold start's
        for path in [*workers, *(p.log_path for p in procs)]:
            t = path.read_text(errors="replace")
            assert "permissions violation" not in t.lower(), f"{path.name} hit a permission it needs:\n{t[-3000:]}"
            assert pw["planner"] not in t
        assert server.log_file is not None
        assert "permissions violation" not in server.log_file.read_text(errors="replace").lower()
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop(timeout=30)
