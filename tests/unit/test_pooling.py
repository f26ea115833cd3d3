"""Pooling as a model's sentence-transformers config asks: mean, CLS, last token; Normalize."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shared.engine.reference.pooling import PoolingSpec, embed_batches, pool, read_pooling


def _st_model(root: Path, pooling: dict[str, bool], normalize: bool) -> Path:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (root / "1_Pooling").mkdir(parents=True)
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 4, **pooling}))
    return root


@pytest.mark.parametrize("key, mode", [("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                                       ("pooling_mode_lasttoken", "lasttoken")])
def test_the_config_names_the_pooling(tmp_path: Path, key: str, mode: str) -> None:
    assert read_pooling(_st_model(tmp_path, {key: True}, True), PoolingSpec()) == PoolingSpec(mode, True)


def test_no_config_keeps_the_default_and_unknown_pooling_is_refused(tmp_path: Path) -> None:
    assert read_pooling(tmp_path, PoolingSpec("mean")) == PoolingSpec("mean", False)
    with pytest.raises(ValueError, match="pooling"):
        read_pooling(_st_model(tmp_path / "m", {"pooling_mode_max_tokens": True}, False), PoolingSpec())


def test_pooling_reads_only_the_real_tokens() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]], [[2.0, 2.0], [4.0, 0.0], [6.0, 4.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, PoolingSpec("mean"), False).tolist() == [[2.0, 1.0], [4.0, 2.0]]
    assert pool(hidden, mask, PoolingSpec("cls"), False).tolist() == [[1.0, 0.0], [2.0, 2.0]]
    assert pool(hidden, mask, PoolingSpec("lasttoken"), False).tolist() == [[3.0, 2.0], [6.0, 4.0]]
    unit = pool(hidden, mask, PoolingSpec("cls", normalize=True), False)
    assert torch.allclose(unit, torch.tensor([[1.0, 0.0], [2 ** -0.5, 2 ** -0.5]]))


def test_batches_stay_within_the_padded_budget() -> None:
    assert embed_batches([[1] * 3, [1] * 2, [1] * 4, [1]], 8) == [[[1] * 3, [1] * 2], [[1] * 4, [1]]]
