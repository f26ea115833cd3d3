"""/v1/rerank, /v1/score, /tokenize and /detokenize through real processes: nats-server, a score worker running
a tiny random BERT cross-encoder (made offline), mock chat and embedding workers, the frontend."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import torch

from shared.tokenizer import Tokenizer
from tests.integration.test_embeddings import client_for, post, wait_listed
from tests.metrics import metric

QUERY = "what does a cat eat?"
DOCS = ["cats eat fish and meat.", "the stock market fell today.", "a kitten drinks milk!", "rain is expected",
        "dogs and cats eat pet food.", "python is a programming language"]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.tiny_cross_encoder import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny-cross-encoder", seed=3)


def hf_scores(model_dir: Path, pairs: list[tuple[str, str]]) -> list[float]:
    """transformers' own tokenizer and AutoModelForSequenceClassification: sigmoid of the one logit."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.sigmoid(model(**batch).logits[:, 0]).tolist()


def test_rerank_and_score_on_a_cross_encoder_equal_transformers(cluster, cross_encoder, tiny_model):
    chat_model = cluster.model
    cluster.model = cross_encoder
    score_worker = cluster.worker(engine="reference", service="score")  # python -m services.score
    cluster.model = chat_model
    cluster.worker("--served-model-name", "chatty", engine="mock")
    cluster.worker("--served-model-name", "embeddy", "--embedding", engine="mock")
    cluster.frontend("--max-rerank-documents", "50")
    url, name = cluster.url, "tiny-cross-encoder"
    wait_listed(url, {name, "chatty", "embeddy"})
    want = hf_scores(cross_encoder, [(QUERY, d) for d in DOCS])
    order = sorted(range(len(DOCS)), key=lambda i: -want[i])

    status, got = post(url + "/v1/rerank", {"model": name, "query": QUERY, "documents": DOCS})
    assert status == 200, got
    assert [r["index"] for r in got["results"]] == order  # the same order as transformers' scores
    for r in got["results"]:
        assert abs(r["relevance_score"] - want[r["index"]]) <= 1e-4 and r["document"]["text"] == DOCS[r["index"]]
    ce_tok = Tokenizer.from_dir(cross_encoder)
    tokens = sum(len(e.ids) for e in ce_tok.backend.encode_batch([(QUERY, d) for d in DOCS]))
    assert got["usage"]["prompt_tokens"] == tokens and got["model"] == name

    status, top = post(url + "/v2/rerank", {"model": name, "query": QUERY, "top_n": 2, "return_documents": False,
                                            "documents": [{"text": d} for d in DOCS]})  # Cohere's v2 path, {text}
    assert status == 200 and [r["index"] for r in top["results"]] == order[:2], top
    assert all("document" not in r for r in top["results"])

    status, sc = post(url + "/v1/score", {"model": name, "text_1": QUERY, "text_2": DOCS})  # 1 x N
    assert status == 200 and [d["index"] for d in sc["data"]] == list(range(len(DOCS))), sc
    assert all(abs(d["score"] - w) <= 1e-4 for d, w in zip(sc["data"], want, strict=True))
    status, nn = post(url + "/v1/score", {"model": name, "text_1": [QUERY, DOCS[0]], "text_2": [DOCS[1], QUERY]})
    want_nn = hf_scores(cross_encoder, [(QUERY, DOCS[1]), (DOCS[0], QUERY)])  # N x N, item by item
    assert status == 200 and all(abs(d["score"] - w) <= 1e-4 for d, w in zip(nn["data"], want_nn, strict=True))

    # an embedding model: the cosine similarity of the query's and each document's embeddings
    status, cos = post(url + "/v1/rerank", {"model": "embeddy", "query": QUERY, "documents": DOCS[:3]})
    assert status == 200, cos
    vecs = client_for(url).embeddings.create(model="embeddy", input=[QUERY, *DOCS[:3]], encoding_format="float")
    v = torch.tensor([d.embedding for d in vecs.data], dtype=torch.float64)
    want_cos = torch.nn.functional.cosine_similarity(v[:1], v[1:]).tolist()
    for r in cos["results"]:
        assert abs(r["relevance_score"] - want_cos[r["index"]]) <= 1e-6

    # bad input: a clear 400 before any worker is asked
    served = metric(score_worker, "shoal_endpoint_requests_total", component="score", endpoint="score", outcome="ok")
    assert served == 4  # two reranks, two scores
    for body, param in [({"query": QUERY, "documents": ["d"] * 10_000}, "documents"),
                        ({"query": "  ", "documents": DOCS}, "query"),
                        ({"query": QUERY, "documents": []}, "documents"),
                        ({"query": QUERY, "documents": [1, 2]}, None),
                        ({"query": 5, "documents": DOCS}, None),
                        ({"query": QUERY, "documents": DOCS, "top_n": -1}, None),
                        ({"query": QUERY, "documents": DOCS, "frobnicate": 1}, None),
                        ({"query": QUERY, "documents": ["x " * 200]}, "documents")]:  # longer than 128 positions
        status, err = post(url + "/v1/rerank", {"model": name, **body})
        assert status == 400 and err["error"]["message"], (body, err)
        if param is not None:
            assert err["error"]["param"] == param, err
    status, err = post(url + "/v1/rerank", {"model": name, "query": QUERY, "documents": ["d"] * 10_000})
    assert "10000 documents" in err["error"]["message"] and "at most 50" in err["error"]["message"]
    status, err = post(url + "/v1/score", {"model": name, "text_1": ["a", "b"], "text_2": ["a", "b", "c"]})
    assert status == 400 and err["error"]["param"] == "text_2"
    status, err = post(url + "/v1/rerank", {"model": "chatty", "query": QUERY, "documents": DOCS})
    assert status == 400 and err["error"]["param"] == "model"
    status, err = post(url + "/v1/rerank", {"model": "nope", "query": QUERY, "documents": DOCS})
    assert status == 404
    status, err = post(url + "/v1/completions", {"model": name, "prompt": "hi"})
    assert status == 400 and err["error"]["code"] == "model_not_generative"
    assert metric(score_worker, "shoal_endpoint_requests_total", component="score", endpoint="score",
                  outcome="ok") == served  # none of them reached the worker
    assert sum(v for (n, labels), v in _samples(score_worker).items() if n == "shoal_endpoint_requests_total") == served

    # tokenize -> detokenize round-trips on token ids (a prompt, and chat messages with the template)
    tok = Tokenizer.from_dir(tiny_model)
    status, t = post(url + "/tokenize", {"model": "chatty", "prompt": "héllo wörld", "return_token_strs": True})
    assert status == 200 and t["tokens"] == tok.encode("héllo wörld", True) and t["count"] == len(t["tokens"])
    assert len(t["token_strs"]) == t["count"] and t["max_model_len"] > 0
    status, d = post(url + "/detokenize", {"model": "chatty", "tokens": t["tokens"]})
    assert status == 200 and d["prompt"] == d["text"]
    status, again = post(url + "/v1/tokenize", {"model": "chatty", "prompt": d["prompt"], "add_special_tokens": False})
    assert again["tokens"] == t["tokens"]
    messages = [{"role": "user", "content": "hi"}]
    status, m = post(url + "/tokenize", {"model": "chatty", "messages": messages})
    want_ids = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True))
    assert status == 200 and m["tokens"] == want_ids
    status, m2 = post(url + "/tokenize", {"model": "chatty", "messages": messages, "add_generation_prompt": False})
    assert m2["tokens"] == tok.encode(tok.apply_chat_template(messages, add_generation_prompt=False))
    status, ce = post(url + "/tokenize", {"model": name, "prompt": ["a cat", "b"]})  # a list: one list each
    assert status == 200 and ce["tokens"] == ce_tok.encode_batch(["a cat", "b"], True)
    assert ce["count"] == [len(x) for x in ce["tokens"]] and ce["tokens"][1] == [2, ce_tok.token_to_id("b"), 3]
    status, d = post(url + "/detokenize", {"model": name, "tokens": ce["tokens"][0]})
    assert post(url + "/tokenize", {"model": name, "prompt": d["text"], "add_special_tokens": False})[1]["tokens"] \
        == ce["tokens"][0]
    for path, body in [("/tokenize", {"model": "chatty"}), ("/tokenize", {"model": "chatty", "prompt": 3}),
                       ("/detokenize", {"model": "chatty", "tokens": [10**9]}),
                       ("/detokenize", {"model": "chatty", "tokens": "abc"}), ("/tokenize", {"prompt": "x"})]:
        status, err = post(url + path, body)
        assert status == 400 and err["error"]["message"], (path, body, err)


def _samples(proc) -> dict:
    from tests.metrics import samples

    return samples(proc)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())
