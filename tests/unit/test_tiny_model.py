"""The default tiny model: loadable by transformers, deterministic, small, remade when half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.model.tiny import MARKER, ensure_tiny, make_tiny

ROOT = Path(__file__).resolve().parents[2]


def _bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_transformers_loads_the_model_and_runs_a_forward_pass(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = tok.encode("héllo 你好", add_special_tokens=False)
    assert len(ids) == len("héllo 你好".encode())  # one token per UTF-8 byte
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), 261)
    assert model.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert (tok.bos_token_id, tok.eos_token_id) == (256, 257)


def test_config_is_the_promised_small_llama(tiny_model: Path) -> None:
    cfg = json.loads((tiny_model / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (64, 128, 2)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (4, 2, 16)
    assert cfg["max_position_embeddings"] == 4096
    assert cfg["tie_word_embeddings"] is False
    assert json.loads((tiny_model / "generation_config.json").read_text())["eos_token_id"] == 257
    assert (tiny_model / "model.safetensors").stat().st_size < 1_000_000


def test_same_seed_gives_identical_bytes_and_another_seed_other_weights(tmp_path: Path, tiny_model: Path) -> None:
    again = _bytes(make_tiny(tmp_path / "again", seed=0))
    assert again == _bytes(tiny_model)
    other = _bytes(make_tiny(tmp_path / "other", seed=1))
    assert other["model.safetensors"] != again["model.safetensors"]
    assert other["tokenizer.json"] == again["tokenizer.json"]


def test_vocab_extra_adds_reserved_special_tokens(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    d = make_tiny(tmp_path / "wide", vocab_extra=3)
    assert json.loads((d / "config.json").read_text())["vocab_size"] == 264
    tok = AutoTokenizer.from_pretrained(d)
    assert len(tok) == 264
    assert tok.convert_tokens_to_ids("<|reserved_2|>") == 263


def test_ensure_tiny_remakes_a_half_written_dir_and_keeps_a_complete_one(tmp_path: Path, tiny_model: Path) -> None:
    d = ensure_tiny(tmp_path / "m")
    assert _bytes(d) == _bytes(tiny_model)
    stamp = (d / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny(d) == d
    assert (d / "model.safetensors").stat().st_mtime_ns == stamp  # complete: left alone

    (d / MARKER).unlink()
    (d / "model.safetensors").write_bytes(b"truncated")
    ensure_tiny(d)
    assert _bytes(d) == _bytes(tiny_model)


def test_make_tiny_refuses_to_delete_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        make_tiny(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cli_make_tiny_prints_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "cli-tiny"
    done = subprocess.run([sys.executable, "-m", "shared.cli", "model", "make-tiny", str(out), "--seed", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert _bytes(out) == _bytes(make_tiny(tmp_path / "direct", seed=3))


def test_cli_reports_a_foreign_directory_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    done = subprocess.run([sys.executable, "-m", "shared.cli", "model", "make-tiny", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "not a tiny model directory" in done.stderr
    assert "Traceback" not in done.stderr
