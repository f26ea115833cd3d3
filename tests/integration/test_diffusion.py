"""The diffusion worker through real processes: nats-server, services.diffusion, the frontend, the OpenAI client.

The oracle is written here from scratch (plain torch over the model's safetensors,
no shoal code): a Llama forward with bidirectional attention, and LLaDA's loop:
append a block of masks, then `steps` times predict the block and unmask the k
most confident predictions.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer as HfTokenizer

from shared.cluster.natsd import NatsServer
from shared.cluster.procs import ServiceProc
from tests.conftest import Cluster

BLOCK, STEPS = 8, 4  # the worker runs with --dllm-steps 4: two tokens unmasked per iteration


@pytest.fixture(scope="module")
def diffusion_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("dllm") / "tiny-dllm", seed=2, diffusion=True)


class Oracle:
    """A straightforward masked-diffusion generator over the model directory's weights."""

    def __init__(self, model_dir: Path) -> None:
        cfg = json.loads((model_dir / "config.json").read_text())
        self.cfg = cfg
        self.w = load_file(str(model_dir / "model.safetensors"))
        self.mask = cfg["shoal_diffusion"]["mask_token_id"]
        self.eos = cfg["eos_token_id"]
        self.tok = HfTokenizer.from_file(str(model_dir / "tokenizer.json"))

    def logits(self, ids: list[int]) -> torch.Tensor:
        c, w = self.cfg, self.w
        nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        eps = c["rms_norm_eps"]

        def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

        t = len(ids)
        theta = c.get("rope_theta") or c["rope_parameters"]["rope_theta"]  # transformers 4 / 5 layouts
        inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(t).float(), inv)
        cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

        def rope(x: torch.Tensor) -> torch.Tensor:  # [heads, t, hd]
            half = torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], -1)
            return x * cos + half * sin

        x = w["model.embed_tokens.weight"][torch.tensor(ids)]
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = norm(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(t, nh, hd).transpose(0, 1)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(t, nkv, hd).transpose(0, 1)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(t, nkv, hd).transpose(0, 1)
            q, k = rope(q), rope(k)
            k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
            att = torch.softmax(q @ k.transpose(1, 2) / hd**0.5, -1)  # no causal mask: every position sees all
            x = x + (att @ v).transpose(0, 1).reshape(t, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
            h = norm(x, w[p + "post_attention_layernorm.weight"])
            gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
            x = x + (F.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
        return norm(x, w["model.norm.weight"]) @ w["lm_head.weight"].T

    def generate(self, prompt: list[int], max_tokens: int, stop_ids: tuple[int, ...] = (),
                 steps: int = STEPS) -> tuple[list[int], str]:
        seq, out = list(prompt), []
        while True:
            start = len(seq)
            seq += [self.mask] * BLOCK
            for i in range(steps):
                k = BLOCK // steps + (1 if i < BLOCK % steps else 0)
                lg = self.logits(seq)[start:]
                lg[:, self.mask] = float("-inf")
                prob, pred = torch.softmax(lg, -1).max(-1)
                masked = [j for j in range(BLOCK) if seq[start + j] == self.mask]
                best = sorted(masked, key=lambda j: -float(prob[j]))[:k]
                for j in best:
                    seq[start + j] = int(pred[j])
            for t in seq[start:]:
                out.append(t)
                if t == self.eos or t in stop_ids:
                    return out, "stop"
                if len(out) == max_tokens:
                    return out, "length"

    def chat_prompt(self, text: str) -> list[int]:
        return self.tok.encode(f"<|user|>{text}<|assistant|>", add_special_tokens=False).ids

    def text(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
        return json.loads(r.read())


def wait_listed(url: str, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
            data = json.loads(r.read())["data"]
        if data:
            return data[0]
        time.sleep(0.1)
    raise TimeoutError("the frontend lists no model")


@pytest.fixture(scope="module")
def dllm_cluster(diffusion_model: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Cluster, ServiceProc]]:
    """One cluster for the module (starting a torch worker costs seconds): nats-server, diffusion worker, frontend."""
    d = tmp_path_factory.mktemp("dllm-cluster")
    nats = NatsServer(d / "nats", log_file=d / "nats.log").start()
    cluster = Cluster(nats, diffusion_model, d / "logs")
    try:
        worker = cluster.worker("--dllm-steps", str(STEPS), engine="diffusion", service="diffusion")
        cluster.frontend()
        wait_listed(cluster.url)
        yield cluster, worker
    finally:
        cluster.stop()
        nats.stop()


def test_greedy_chat_equals_the_oracle_streamed_and_not(dllm_cluster, diffusion_model) -> None:
    cluster, _ = dllm_cluster
    oracle = Oracle(diffusion_model)
    client = openai.OpenAI(base_url=cluster.url + "/v1", api_key="none", max_retries=0, timeout=60)
    msgs = [{"role": "user", "content": "hello"}]
    want, reason = oracle.generate(oracle.chat_prompt("hello"), 12)
    assert reason == "length" and len(want) == 12
    assert oracle.generate(oracle.chat_prompt("hello"), 12, steps=8)[0] != want  # the schedule shows in the output

    full = client.chat.completions.create(model=cluster.model_name, messages=msgs, max_tokens=12, temperature=0)
    assert full.choices[0].message.content == oracle.text(want)
    assert full.choices[0].finish_reason == "length"
    assert full.usage.prompt_tokens == len(oracle.chat_prompt("hello")) and full.usage.completion_tokens == 12

    stream = client.chat.completions.create(model=cluster.model_name, messages=msgs, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    deltas, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            deltas.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert "".join(deltas) == oracle.text(want) and finish == "length"
    assert usage is not None and usage.completion_tokens == 12

    # a stop token id inside the second block ends the output with it (as on every engine: text unless special)
    stop_at = next(i for i in range(BLOCK, 12) if want[i] not in want[:i])
    cut, why = oracle.generate(oracle.chat_prompt("hello"), 12, stop_ids=(want[stop_at],))
    assert why == "stop" and cut == want[: stop_at + 1]
    got = client.chat.completions.create(model=cluster.model_name, messages=msgs, max_tokens=12, temperature=0,
                                         extra_body={"stop_token_ids": [want[stop_at]]})
    assert got.choices[0].finish_reason == "stop" and got.usage.completion_tokens == stop_at + 1
    assert got.choices[0].message.content == oracle.text(want[: stop_at + 1])
    assert health(dllm_cluster[1].system_port)["running"] == 0
    frontend_log = cluster.procs[-1].tail(200)  # the frontend saw the model card: a `backend` of engine diffusion
    assert re.search(r"model_added.*component=backend engine=diffusion model=tiny-dllm", frontend_log), frontend_log


def test_four_concurrent_requests_of_different_lengths_equal_the_oracle(dllm_cluster, diffusion_model) -> None:
    cluster, _ = dllm_cluster
    oracle = Oracle(diffusion_model)
    prompts = ["a", "tell me more", "the quick brown fox jumps over", "xy" * 9]
    limits = [5, 9, 16, 3]
    want = [oracle.generate(oracle.chat_prompt(p), n)[0] for p, n in zip(prompts, limits, strict=True)]

    async def one(client: openai.AsyncOpenAI, p: str, n: int) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model=cluster.model_name, messages=[{"role": "user", "content": p}], max_tokens=n, temperature=0,
            stream=True, stream_options={"include_usage": True})
        text, used = "", -1
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                used = chunk.usage.completion_tokens
        return text, used

    async def all_at_once() -> list[tuple[str, int]]:
        client = openai.AsyncOpenAI(base_url=cluster.url + "/v1", api_key="none", max_retries=0, timeout=60)
        return await asyncio.gather(*(one(client, p, n) for p, n in zip(prompts, limits, strict=True)))

    got = asyncio.run(all_at_once())
    assert got == [(oracle.text(w), len(w)) for w in want]


def test_client_abort_frees_the_request_and_the_worker_serves_on(dllm_cluster) -> None:
    cluster, worker = dllm_cluster
    client = openai.OpenAI(base_url=cluster.url + "/v1", api_key="none", max_retries=0, timeout=60)
    stream = client.completions.create(model=cluster.model_name, prompt="go", max_tokens=3000, temperature=0,
                                       stream=True)
    first = next(iter(stream))  # the first block arrived: the request runs
    assert first.choices[0].text is not None
    assert health(worker.system_port)["running"] == 1
    stream.close()  # the client goes away mid-generation (3000 tokens would take minutes)
    end = time.monotonic() + 10
    while health(worker.system_port)["running"] != 0:
        assert time.monotonic() < end, "the aborted request still runs"
        time.sleep(0.1)
    again = client.completions.create(model=cluster.model_name, prompt="go", max_tokens=4, temperature=0)
    assert again.usage.completion_tokens == 4 and again.choices[0].finish_reason == "length"
