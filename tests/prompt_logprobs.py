"""Checks of completions' echo + logprobs (prompt logprobs) against transformers on the tiny model."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from shared.tokenizer import Tokenizer


def _post(url: str, body: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def hf_prompt_logprobs(model_dir: Path, ids: list[int]) -> torch.Tensor:
    """`[len(ids) - 1, vocab]` log-softmax rows predicting ids[1:] (float32, CPU)."""
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.log_softmax(hf(torch.tensor([ids])).logits[0, :-1].float(), dim=-1)


def check_prompt_logprobs(url: str, model: str, model_dir: Path) -> None:
    tok = Tokenizer.from_dir(model_dir)
    ids = tok.encode("The quick brown fox jumps")
    rows = hf_prompt_logprobs(model_dir, ids)
    want = rows.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    base = {"model": model, "prompt": ids, "echo": True, "logprobs": 2, "temperature": 0}

    status, raw = _post(url, {**base, "max_tokens": 0})  # scoring: the prompt alone
    assert status == 200, raw
    choice = json.loads(raw)["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == tok.decode(ids) and choice["finish_reason"] == "length"
    assert len(lp["token_logprobs"]) == len(ids) and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert torch.allclose(torch.tensor(lp["token_logprobs"][1:]), want, atol=1e-4)
    top_vals = rows.topk(2, dim=-1).values
    for i, top in enumerate(lp["top_logprobs"][1:]):  # keyed by token text: two tokens may share one (U+FFFD)
        assert 1 <= len(top) <= 2 and abs(max(top.values()) - float(top_vals[i, 0])) <= 1e-4
    assert lp["text_offset"][0] == 0 and len(lp["tokens"]) == len(ids)

    status, raw = _post(url, {**base, "max_tokens": 3})  # the prompt's, then the output's
    assert status == 200, raw
    whole = json.loads(raw)["choices"][0]["logprobs"]
    assert len(whole["token_logprobs"]) == len(ids) + 3
    assert whole["token_logprobs"][: len(ids)] == lp["token_logprobs"]
    status, raw = _post(url, {**base, "max_tokens": 3, "stream": True})
    events = [json.loads(ln[6:]) for ln in raw.decode().split("\n") if ln.startswith("data: {")]
    streamed = [x for e in events if e["choices"] and e["choices"][0]["logprobs"]
                for x in e["choices"][0]["logprobs"]["token_logprobs"]]
    assert streamed == whole["token_logprobs"]
