"""`--model-path` as a Hugging Face id: resolved from a hub cache in huggingface_hub's own layout, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from huggingface_hub import constants, scan_cache_dir, try_to_load_from_cache

from shared.config.model import add_model_args, model_options
from shared.model.hub import ModelNotFoundError, resolve_model, served_name
from tests.hub_cache import add_to_cache


@pytest.fixture
def hub(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    add_to_cache(tmp_path, "shoal-test/tiny", tiny_model, commit="a" * 40)
    add_to_cache(tmp_path, "shoal-test/tiny", tiny_model, commit="b" * 40, ref="v2")
    return tmp_path / "hub"


def test_the_test_cache_is_what_huggingface_hub_reads(hub: Path) -> None:
    info = scan_cache_dir(hub)
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == "shoal-test/tiny"
    assert {r.commit_hash for r in repo.revisions} == {"a" * 40, "b" * 40}
    assert try_to_load_from_cache("shoal-test/tiny", "config.json", cache_dir=hub) == str(
        hub / "models--shoal-test--tiny" / "snapshots" / ("a" * 40) / "config.json")


def test_a_hub_id_resolves_to_its_snapshot_offline(hub: Path, tiny_model: Path) -> None:
    path = Path(resolve_model("shoal-test/tiny"))
    assert path == hub / "models--shoal-test--tiny" / "snapshots" / ("a" * 40)
    assert (path / "config.json").read_bytes() == (tiny_model / "config.json").read_bytes()
    assert Path(resolve_model("shoal-test/tiny", revision="v2")).name == "b" * 40
    assert Path(resolve_model("shoal-test/tiny", revision="b" * 40)).name == "b" * 40


def test_a_local_directory_is_used_as_it_is(hub: Path, tiny_model: Path) -> None:
    assert resolve_model(str(tiny_model)) == str(tiny_model)


@pytest.mark.parametrize("model, revision", [("shoal-test/nope", None), ("shoal-test/tiny", "v9")])
def test_a_missing_id_or_revision_names_it_and_the_cache(hub: Path, model: str, revision: str | None) -> None:
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model(model, revision)
    assert model in str(e.value) and str(hub) in str(e.value)
    assert revision is None or revision in str(e.value)


def test_served_name_defaults_to_the_id_or_the_directory_name(tiny_model: Path) -> None:
    assert served_name("shoal-test/tiny") == "shoal-test/tiny"
    assert served_name(str(tiny_model)) == tiny_model.name


def test_flags_give_the_snapshot_and_the_id_as_name(hub: Path) -> None:
    p = argparse.ArgumentParser()
    add_model_args(p)
    opts = model_options(p, p.parse_args(["--model-path", "shoal-test/tiny"]), "hint")
    assert opts.served_model_name == "shoal-test/tiny" and Path(opts.model_path).parent.name == "snapshots"
    opts = model_options(p, p.parse_args(["--model", "shoal-test/tiny", "--served-model-name", "t"]), "h")
    assert opts.served_model_name == "t"
    opts = model_options(p, p.parse_args(["--model", "shoal-test/tiny", "--revision", "v2"]), "h")
    assert Path(opts.model_path).name == "b" * 40
