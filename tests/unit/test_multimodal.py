"""Multimodal pieces without processes: URLs, preprocessing (vs transformers' CLIP processor), placeholder
expansion, slots, the reference engine with image embeddings (vs transformers' Llava), the SGLang mapping,
and the frontend's image content parts."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from protocol.messages import EngineRequest, SamplingOptions, StopConditions
from protocol.multimodal import PAD_BASE, EmbeddingRef, ImageItem, pad_value, parse_release, release_tag
from shared.engine.base import EngineError
from shared.engine.sglang.mapping import generate_kwargs
from shared.engine.sglang.multimodal import precomputed_image_data
from shared.multimodal.expand import expand_request, is_expanded
from shared.multimodal.fetch import decode_data_uri, fetch_image
from shared.multimodal.image import ImageSpec, image_hash, preprocess
from shared.multimodal.slots import SlotPool
from tests.images import png


@pytest.fixture
def vlm(tiny_vlm: Path) -> Path:
    return tiny_vlm


def test_pad_values_are_out_of_vocabulary_deterministic_and_distinct() -> None:
    a, b = image_hash(torch.zeros(3, 4, 4)), image_hash(torch.ones(3, 4, 4))
    assert pad_value(a) == pad_value(a) != pad_value(b)
    assert PAD_BASE <= pad_value(a) < 2 * PAD_BASE
    assert parse_release(release_tag(42)) == 42 and parse_release(b"done:1") is None


def test_expand_places_each_image_and_refuses_a_count_mismatch() -> None:
    ref = EmbeddingRef(agent="enc", addr=1, nbytes=8, shape=[2, 1])
    req = EngineRequest("r", [1, 9, 2, 9, 3], multimodal=[ImageItem("u1"), ImageItem("u2")])
    out = expand_request(req, 9, ["a" * 64, "b" * 64], [2, 3], [ref, ref])
    pa, pb = pad_value("a" * 64), pad_value("b" * 64)
    assert out.token_ids == [1, pa, pa, 2, pb, pb, pb, 3]
    assert [(i.offset, i.num_tokens, i.embedding) for i in out.multimodal] == [(1, 2, ref), (4, 3, ref)]
    assert is_expanded(out) and not is_expanded(req)
    with pytest.raises(EngineError, match="1 image placeholders for 2 images"):
        expand_request(EngineRequest("r", [9], multimodal=[ImageItem("u"), ImageItem("v")]), 9, ["a" * 64] * 2,
                       [2, 2])
    migrated = expand_request(EngineRequest("r", [9, 5, 9], multimodal=[ImageItem("u")]), 9, ["a" * 64], [2])
    assert migrated.token_ids == [pa, pa, 5, 9]  # a generated image token after the prompt stays


def test_a_disaggregated_decode_worker_takes_images_only_expanded() -> None:
    from services.worker.roles.images import ExpandedOnly
    from shared.runtime.server import RequestContext

    async def inner(req: EngineRequest, ctx: RequestContext) -> AsyncIterator[str]:
        yield req.request_id

    async def run(req: EngineRequest) -> list[str]:
        return [x async for x in ExpandedOnly(inner)(req, RequestContext("r", "i", {}))]

    raw = EngineRequest("r", [1, 9], multimodal=[ImageItem("u")])
    with pytest.raises(EngineError, match="through a processor"):
        asyncio.run(run(raw))
    assert asyncio.run(run(expand_request(raw, 9, ["a" * 64], [2]))) == ["r"]


def test_urls_data_uris_and_limits() -> None:
    assert decode_data_uri("data:image/png;base64," + base64.b64encode(b"xyz").decode()) == b"xyz"
    with pytest.raises(EngineError, match="base64"):
        decode_data_uri("data:image/png;base64,@@")
    with pytest.raises(EngineError, match="larger than"):
        decode_data_uri("data:image/png;base64," + "A" * 400, max_bytes=100)
    with pytest.raises(EngineError, match="http"):
        asyncio.run(fetch_image("file:///etc/passwd"))
    with pytest.raises(EngineError, match="not allowed"):  # loopback: refused by default (issue 22)
        asyncio.run(fetch_image("http://127.0.0.1:1/x.png", timeout=2))


def test_preprocessing_equals_transformers_clip_processor(vlm: Path) -> None:
    clip = pytest.importorskip("transformers.models.clip.image_processing_pil_clip",
                               reason="transformers without the PIL CLIP image processor")
    from shared.model.tiny_vlm import preprocessor_config

    cfg = {k: v for k, v in preprocessor_config().items() if k != "image_processor_type"}
    proc = clip.CLIPImageProcessorPil(**cfg)
    for data in (png(0, (57, 40)), png(1, (20, 90))):
        want = proc(images=Image.open(io.BytesIO(data)), return_tensors="pt")["pixel_values"][0]
        got = preprocess(data, ImageSpec.from_dir(vlm))
        assert got.shape == (3, 32, 32) and torch.allclose(got, want, atol=1e-5)
    with pytest.raises(EngineError, match="cannot decode"):
        preprocess(b"not an image", ImageSpec.from_dir(vlm))


def test_slot_pool_round_trip() -> None:
    pool = SlotPool(2, 64)
    t = torch.arange(6, dtype=torch.float32).view(2, 3)
    s = pool.alloc()
    assert s is not None and pool.put(s, t) == 24
    assert torch.equal(pool.get(s, 24, torch.float32, [2, 3]), t)
    assert pool.alloc() is not None and pool.alloc() is None
    pool.free(s)
    assert pool.num_free == 1


def test_reference_engine_places_image_embeddings_like_transformers_llava(vlm: Path) -> None:
    """Chunked prefill (8 tokens a step) cuts through both images; prefix caching keeps images apart."""
    from transformers import LlavaForConditionalGeneration

    from services.worker.roles.images import ImageInputs
    from shared.engine.reference import ReferenceConfig, ReferenceEngine
    from shared.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(vlm)
    pics = [png(3, (40, 30)), png(4, (30, 50))]
    urls = ["data:image/png;base64," + base64.b64encode(p).decode() for p in pics]
    ids = tok.encode("<|user|>look<image>and<image>?<|assistant|>")
    hf = LlavaForConditionalGeneration.from_pretrained(vlm, dtype=torch.float32).eval()
    spec = ImageSpec.from_dir(vlm)

    def oracle(images: list[bytes]) -> list[int]:
        full = [t for i in ids for t in ([i] * 16 if i == hf.config.image_token_id else [i])]
        pixels = torch.stack([preprocess(p, spec) for p in images])
        with torch.no_grad():
            out = hf.generate(input_ids=torch.tensor([full]), pixel_values=pixels, max_new_tokens=6, do_sample=False)
        return out[0, len(full):].tolist()

    async def run() -> list[tuple[list[int], int]]:
        eng = ReferenceEngine(ReferenceConfig(model_path=str(vlm), num_blocks=64, page_size=4, max_batched_tokens=8))
        await eng.start()
        inputs = ImageInputs(eng, spec, None)
        outs = []
        for n, order in enumerate(([0, 1], [1, 0], [0, 1])):
            req = EngineRequest(f"r{n}", ids, stop=StopConditions(max_tokens=6, ignore_eos=True),
                                sampling=SamplingOptions(temperature=0),
                                multimodal=[ImageItem(urls[i]) for i in order])
            expanded, embeds = await inputs.resolve(req)
            eng.set_image_embeddings(expanded.request_id, embeds)
            got, cached = [], 0
            async for chunk in eng.generate(expanded):
                got += chunk.token_ids
                cached = chunk.usage.cached_tokens if chunk.usage else cached
            outs.append((got, cached))
        with pytest.raises(EngineError, match="not encoded"):
            async for _ in eng.generate(expanded):
                pass
        await eng.stop()
        return outs

    (first, c1), (swapped, c2), (again, c3) = asyncio.run(run())
    assert first == again == oracle(pics)
    assert swapped == oracle(pics[::-1]) != first
    assert c1 == 0 and c2 < 8 and c3 >= 32  # the swapped images share only the text before them


def test_sglang_gets_urls_in_epd_and_refuses_expanded_requests() -> None:
    req = EngineRequest("r", [1, 9, 2], multimodal=[ImageItem("http://x/a.png")])
    assert generate_kwargs(req)["image_data"] == ["http://x/a.png"]
    assert "image_data" not in generate_kwargs(EngineRequest("r", [1]))
    expanded = expand_request(req, 9, ["c" * 64], [2])
    with pytest.raises(EngineError, match="not wired"):
        generate_kwargs(expanded)
    ids, items = precomputed_image_data(expanded, 9, [torch.zeros(2, 4)])
    assert ids == [1, 9, 9, 2] and items[0]["format"] == "precomputed_embedding"


def test_frontend_turns_image_parts_into_placeholders_and_items(vlm: Path) -> None:
    import msgspec

    from services.frontend.openai_types import ChatCompletionRequest
    from services.frontend.preprocess import prepare
    from shared.errors import BadRequest
    from shared.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(vlm)

    def body(*parts: dict) -> ChatCompletionRequest:
        return msgspec.convert({"model": "m", "messages": [{"role": "user", "content": list(parts)}],
                                "max_tokens": 4}, ChatCompletionRequest)

    text, img = {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "http://x/a.png"}}
    p = asyncio.run(prepare(tok, body(text, img, img), "r", 4096, None, ("<image>", 16)))
    assert [i.url for i in p.request.multimodal] == ["http://x/a.png"] * 2
    assert p.request.token_ids.count(tok.token_to_id("<image>")) == 2
    assert p.prompt_tokens == len(p.request.token_ids) + 30
    with pytest.raises(BadRequest, match="does not take images"):
        asyncio.run(prepare(tok, body(text, img), "r", 4096))
    with pytest.raises(BadRequest, match=r"image_url\.url"):
        asyncio.run(prepare(tok, body({"type": "image_url", "image_url": {}}), "r", 4096, None, ("<image>", 16)))
    with pytest.raises(BadRequest, match="context length"):
        asyncio.run(prepare(tok, body(img, img), "r", 34, None, ("<image>", 16)))


def test_encoder_store_frees_on_the_readers_notification_or_after_the_ttl() -> None:
    from types import SimpleNamespace

    from services.encode.store import EmbeddingStore

    class FakeAgent:
        name = "enc"
        record = SimpleNamespace(device_id=0, mem_type="DRAM")

        def __init__(self) -> None:
            self.inbox: list[bytes] = []

        async def notifications(self) -> list[bytes]:
            out, self.inbox = self.inbox, []
            return out

    async def run() -> dict[str, int]:
        agent = FakeAgent()
        store = EmbeddingStore(agent, SlotPool(1, 64), ttl=0.2, wait_s=2.0)  # type: ignore[arg-type]
        store.start()
        ref = await store.put(torch.ones(2, 4))
        assert (ref.shape, ref.nbytes, ref.dtype, store.held) == ([2, 4], 32, "float32", 1)
        waiting = asyncio.create_task(store.put(torch.zeros(2, 4)))  # the only slot is taken: waits
        await asyncio.sleep(0.05)
        assert not waiting.done()
        agent.inbox.append(release_tag(ref.handle))
        second = await waiting  # freed by the notification, then taken
        assert second.handle != ref.handle
        await asyncio.sleep(0.4)  # never read: the TTL frees it
        assert store.held == 0
        await store.stop()
        return store.stats

    assert asyncio.run(run()) == {"stored": 2, "released": 1, "expired": 1}


def test_a_chunk_over_image_positions_without_the_embeddings_is_detected() -> None:
    from shared.engine.reference.images import images_missing
    from shared.engine.reference.sequence import SamplingSpec, Sequence

    req = expand_request(EngineRequest("r", [1, 9, 2], multimodal=[ImageItem("u")]), 9, ["a" * 64], [4])
    seq = Sequence(request=req, tokens=list(req.token_ids), prompt_len=6, sampling=SamplingSpec(),
                   stop_ids=frozenset())
    assert images_missing(seq, 0, 6) and images_missing(seq, 4, 6) and not images_missing(seq, 5, 7)
    seq.mm.append((1, torch.zeros(4, 2)))
    assert not images_missing(seq, 0, 6)
