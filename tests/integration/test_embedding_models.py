"""A real encoder (all-MiniLM-L6-v2) through /v1/embeddings equals sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.integration.test_embeddings import client_for, wait_listed
from tests.minilm import TEXTS, extract


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract(tmp_path_factory.mktemp("minilm"))


def test_minilm_through_the_cluster_equals_sentence_transformers(cluster, minilm):
    from sentence_transformers import SentenceTransformer

    cluster.model = minilm
    cluster.worker(engine="reference", service="embedding")
    cluster.frontend()
    wait_listed(cluster.url, {"all-MiniLM-L6-v2"})
    got = client_for(cluster.url).embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float")
    ours = torch.tensor([d.embedding for d in got.data])
    want = torch.from_numpy(SentenceTransformer(str(minilm), device="cpu").encode(TEXTS))
    assert ours.shape == want.shape == (20, 384)
    cos = torch.nn.functional.cosine_similarity(ours, want)
    assert cos.min() >= 0.9999, cos
    assert torch.allclose(ours.norm(dim=-1), torch.ones(20), atol=1e-5)  # the model's Normalize module
    sim = ours @ ours.T
    for i in range(0, 20, 2):  # each text is closer to its paraphrase than to any other pair's text
        others = [j for j in range(20) if j not in (i, i + 1)]
        assert sim[i, i + 1] > sim[i, others].max() and sim[i + 1, i] > sim[i + 1, others].max()
