"""Multimodal serving on real processes (images by URL): EPD, E/PD and E/P/D on the tiny VLM.

Greedy output for prompts with one and two images equals transformers'
LlavaForConditionalGeneration greedy `generate` on the same pixels; images come
from a local HTTP server started here and from data: URIs.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import torch

from shared.cluster.natsd import wait_port
from shared.cluster.procs import ServiceProc, spawn
from shared.multimodal.image import ImageSpec, preprocess
from shared.tokenizer import Tokenizer
from tests.conftest import Cluster
from tests.images import png
from tests.metrics import metric, wait_above
from tests.migration import Streamed, assert_migration_is_invisible
from tests.tap import TokenTap

N = 6  # tokens generated per request
IMAGES = {"/a.png": png(1, (48, 40)), "/b.png": png(2, (32, 64))}


class _Images(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Images.hits.append(self.path)
        if self.path == "/slow.png":  # answers later than the encoder waits
            time.sleep(4)
            return
        body = IMAGES.get(self.path, b"this is not an image" if self.path == "/junk" else None)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture
def vlm_cluster(nats_server, tiny_vlm, tmp_path) -> Iterator[Cluster]:
    c = Cluster(nats_server, tiny_vlm, tmp_path / "logs")
    try:
        yield c
    finally:
        c.stop()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def chat(url: str, model: str, parts: list[dict], n: int = N) -> tuple[int, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": parts}], "max_tokens": n,
            "min_tokens": n, "temperature": 0}
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def image(u: str) -> dict:
    return {"type": "image_url", "image_url": {"url": u}}


@functools.cache
def _llava(model_dir: str) -> object:
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()


def oracle(model_dir: Path, parts: list[dict], pictures: list[bytes], n: int = N) -> list[int]:
    """transformers' Llava greedy token ids for the same chat (the image token repeated per patch)."""
    tok = Tokenizer.from_dir(model_dir)
    hf = _llava(str(model_dir))
    content = "".join(p["text"] if p["type"] == "text" else "<image>" for p in parts)
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": content}]))
    image_id, per = hf.config.image_token_id, 16
    ids = [t for i in ids for t in ([image_id] * per if i == image_id else [i])]
    spec = ImageSpec.from_dir(model_dir)
    pixels = torch.stack([preprocess(p, spec) for p in pictures])
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([ids]), pixel_values=pixels, max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def start(c: Cluster, *procs: ServiceProc) -> None:
    front = c.frontend(wait=False)
    for p in procs:
        p.wait_ready(120)
    front.wait_ready(60)
    wait_port("127.0.0.1", c.http_port)
    c.wait_models()


PRIVATE = "--allow-private-media"  # the test's image server is on loopback (refused by default)


def service(c: Cluster, name: str, module: str, *args: str) -> ServiceProc:
    extra = [PRIVATE] if module == "encode" else []
    p = spawn(name, module, [*c.common, "--model-path", str(c.model), *args, *extra], c.log_dir)
    c.procs.append(p)
    return p


def health(proc: ServiceProc) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.system_port}/health", timeout=5) as r:
        return json.loads(r.read())


def check_outputs(c: Cluster, image_server: str) -> None:
    """One image by URL, two images (URL and data: URI): both equal the oracle, token id for token id."""
    a, b = IMAGES["/a.png"], IMAGES["/b.png"]
    one = [text("what is"), image(image_server + "/a.png"), text("?")]
    two = [image(image_server + "/a.png"), text("vs"), image(data_uri(b)), text("!")]
    tok = Tokenizer.from_dir(c.model)
    with TokenTap(c.nats.url, c.namespace) as tap:
        for parts, pics in ((one, [a]), (two, [a, b])):
            status, body = chat(c.url, c.model_name, parts)
            assert status == 200, body
            want = oracle(c.model, parts, pics)
            assert tap.tokens(body["id"]) == want
            assert body["choices"][0]["message"]["content"] == tok.decode(want)
            assert body["usage"]["completion_tokens"] == N


def check_bad_images(c: Cluster, image_server: str) -> None:
    for url, why in ((image_server + "/missing.png", "did not return an image"),
                     (image_server + "/junk", "cannot decode"), ("ftp://example.invalid/x.png", "http(s)"),
                     ("data:image/png;base64,@@@", "base64")):
        started = time.monotonic()
        status, body = chat(c.url, c.model_name, [text("x"), image(url)])
        assert status == 400, body
        assert why in body["error"]["message"], body
        assert time.monotonic() - started < 15


def test_epd_worker_encodes_itself_and_matches_transformers(vlm_cluster, image_server):
    worker = vlm_cluster.worker("--num-blocks", "256", PRIVATE, engine="reference", wait=False)
    start(vlm_cluster, worker)
    check_outputs(vlm_cluster, image_server)
    check_bad_images(vlm_cluster, image_server)
    assert health(worker)["kv_used_blocks"] == 0


def test_text_only_model_refuses_images(cluster):
    cluster.worker(engine="mock")
    cluster.frontend()
    cluster.wait_models()
    status, body = chat(cluster.url, cluster.model_name, [text("hi"), image("http://127.0.0.1:1/x.png")])
    assert status == 400 and "does not take images" in body["error"]["message"], body


def check_moved_over_nixl(encode: ServiceProc, reader: ServiceProc, images: int) -> None:
    """Every image was encoded by the encoder, READ over NIXL by the LLM worker, and freed by that READ."""
    end = time.monotonic() + 5
    while health(encode)["held"] and time.monotonic() < end:
        time.sleep(0.05)
    h = health(encode)
    assert h["stored"] == h["released"] == images and h["expired"] == 0 and h["held"] == 0, h
    assert metric(reader, "shoal_image_embedding_reads_total", outcome="ok") == images


def test_e_pd_embeddings_travel_over_nixl_and_match_transformers(vlm_cluster, image_server):
    c = vlm_cluster
    encode = service(c, "encode", "encode", "--fetch-timeout", "1")
    processor = service(c, "processor", "processor")
    worker = c.worker("--internal", "--num-blocks", "256", engine="reference", wait=False)
    start(c, encode, processor, worker)
    _Images.hits.clear()
    check_outputs(c, image_server)
    assert sorted(_Images.hits) == ["/a.png", "/a.png"]  # the encoder's fetches: one per image by URL
    check_moved_over_nixl(encode, worker, images=3)
    check_bad_images(c, image_server)
    started = time.monotonic()
    status, body = chat(c.url, c.model_name, [image(image_server + "/slow.png")])
    assert status == 400 and "timed out" in body["error"]["message"], body
    assert time.monotonic() - started < 4
    assert health(worker)["kv_used_blocks"] == 0


def test_e_p_d_prefill_reads_the_embeddings_and_output_matches_transformers(vlm_cluster, image_server):
    c = vlm_cluster
    encode = service(c, "encode", "encode")
    processor = service(c, "processor", "processor")
    prefill = service(c, "prefill", "prefill", "--engine", "reference", "--num-blocks", "256")
    decode = c.worker("--internal", "--disaggregation-mode", "decode", "--num-blocks", "256",
                      engine="reference", wait=False)
    start(c, encode, processor, prefill, decode)
    check_outputs(c, image_server)
    check_moved_over_nixl(encode, prefill, images=3)
    assert health(decode)["kv_used_blocks"] == health(prefill)["kv_used_blocks"] == 0


def test_e_pd_kv_routing_sends_a_repeated_image_to_the_worker_caching_it(vlm_cluster):
    """The processor routes by the expanded prompt, whose pad ids come from the image: with two LLM workers, a
    repeat reaches the one holding its blocks (round-robin would send every other repeat to the cold one),
    and the same text with another image shares no block with it."""
    c = vlm_cluster
    encode = service(c, "encode", "encode")
    processor = service(c, "processor", "processor", "--router-mode", "kv")
    workers = [c.worker("--internal", "--num-blocks", "256", engine="reference", wait=False, name=f"w{i}")
               for i in range(2)]
    start(c, encode, processor, *workers)
    question = text("what is in this picture, in a few words?")

    applied = {"name": "shoal_router_kv_batches_total", "result": "applied"}

    def cached(picture: bytes) -> int:
        before = metric(processor, **applied)
        status, body = chat(c.url, c.model_name, [image(data_uri(picture)), question])
        assert status == 200, body
        hit = (body["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        end = time.monotonic() + 5  # a miss stored new blocks: their KV events reach the processor's router
        while not hit and metric(processor, **applied) == before and time.monotonic() < end:
            time.sleep(0.05)
        return hit

    a = [cached(IMAGES["/a.png"]) for _ in range(4)]
    assert a[0] == 0 and min(a[1:]) >= 48, a  # 16 image tokens + the question: 3 full blocks of 16 and more
    assert cached(IMAGES["/b.png"]) == 0  # the first block already holds the image's pad ids


async def _stream_chat(url: str, model: str, parts: list[dict], n: int, started: asyncio.Event) -> Streamed:
    body = {"model": model, "messages": [{"role": "user", "content": parts}], "max_tokens": n, "min_tokens": n,
            "temperature": 0, "stream": True}
    out, rid = [], ""
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for raw in r.content:
            if raw.startswith(b"data: ") and not raw.startswith(b"data: [DONE]"):
                data = json.loads(raw[6:])
                assert "error" not in data, data
                rid = data["id"]
                for ch in data["choices"]:
                    out.append(ch["delta"].get("content") or "")
                    started.set()
    return Streamed("".join(out), {}, rid)


def test_a_processor_killed_mid_stream_loses_no_request(vlm_cluster):
    """Two processors; one is killed -9 while 6 image chats stream through both: the frontend migrates its
    requests to the other (which encodes the images again), and every stream's token ids equal the run without
    the fault."""
    import signal

    c = vlm_cluster
    encode = service(c, "encode", "encode")
    procs = [service(c, f"processor{i}", "processor") for i in range(2)]
    worker = c.worker("--internal", "--num-blocks", "512", engine="reference", wait=False)
    front = c.frontend("--migration-limit", "2", "--worker-silence-timeout", "2", wait=False)
    for p in (encode, *procs, worker, front):
        p.wait_ready(120)
    wait_port("127.0.0.1", c.http_port)
    c.wait_models()
    chats = [[image(data_uri(IMAGES["/a.png" if i % 2 else "/b.png"])), text(f"tell me about picture {i}")]
             for i in range(6)]
    n = 48

    async def run(kill: bool) -> list[Streamed]:
        started = [asyncio.Event() for _ in chats]
        tasks = [asyncio.create_task(_stream_chat(c.url, c.model_name, parts, n, ev))
                 for parts, ev in zip(chats, started, strict=True)]
        if kill:
            await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in started)), 60)
            await asyncio.to_thread(wait_above, procs[0], "shoal_endpoint_inflight_requests", component="processor",
                                    endpoint="generate")
            procs[0].signal(signal.SIGKILL)  # while it relays streams
        return await asyncio.gather(*tasks)

    assert_migration_is_invisible(c, front, run)
    assert not procs[0].alive() and procs[1].alive()


def test_epd_frontend_kv_routing_sends_a_repeated_image_to_the_worker_caching_it(vlm_cluster, image_server):
    """EPD: the frontend routes before any image is fetched, so the workers' KV events (pad ids from the
    pixels) cannot show it where an image is cached; it remembers where it sent the image instead. With two
    LLM workers every repeat reaches the warm one (by load alone each would be a coin toss)."""
    c = vlm_cluster
    workers = [c.worker("--num-blocks", "256", PRIVATE, engine="reference", wait=False, name=f"w{i}")
               for i in range(2)]
    front = c.frontend("--router-mode", "kv", wait=False)
    for p in workers:
        p.wait_ready(120)
    front.wait_ready(60)
    wait_port("127.0.0.1", c.http_port)
    c.wait_models(2)  # both workers' cards
    question = text("what is in this picture, in a few words?")
    hits = []
    for _ in range(6):
        status, body = chat(c.url, c.model_name, [image(image_server + "/a.png"), question])
        assert status == 200, body
        hits.append((body["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0))
    assert hits[0] == 0 and min(hits[1:]) >= 48, hits  # 16 image tokens + the question: 3 full blocks and more
    served = [health(w)["kv_used_blocks"] for w in workers]
    assert served == [0, 0], served
