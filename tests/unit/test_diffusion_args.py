"""Diffusion flags: shoal's --dllm-* reach the diffusion engine; SGLang's own dLLM flags pass through to SGLang."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.diffusion.main import parse
from shared.engine.diffusion.config import DiffusionConfig, resolve_settings
from shared.engine.sglang import args as sgl_args
from shared.engine.sglang import build_sglang_config
from shared.model.diffusion import DiffusionDefaults, read_diffusion_defaults
from tests.unit.test_sglang_args import needs_sglang

SGLANG_DLLM = ["--dllm-algorithm", "LowConfidence", "--dllm-algorithm-config", "/cfg/lowconf.yaml"]


def test_the_service_defaults_to_the_diffusion_engine_as_a_backend() -> None:
    cfg = parse(["--model-path", "/m/tiny-dllm", "--dllm-block-length", "16", "--dllm-steps", "4",
                 "--dllm-threshold", "0.9"])
    assert (cfg.engine.engine, cfg.component, cfg.endpoint, cfg.served_model_name) == (
        "diffusion", "backend", "generate", "tiny-dllm")
    assert (cfg.engine.dllm.block_length, cfg.engine.dllm.steps, cfg.engine.dllm.threshold) == (16, 4, 0.9)
    assert parse(["--model-path", "/m", "--dllm-block-size", "32"]).engine.dllm.block_length == 32
    assert parse(["--model-path", "/m"]).engine.dllm.steps is None  # the model's own setting


@pytest.mark.parametrize(("engine", "says"), [("reference", "--engine diffusion"),
                                              ("sglang", "--dllm-algorithm-config")])
def test_dllm_flags_are_refused_by_other_engines(engine: str, says: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse(["--model-path", "/m", "--engine", engine, "--dllm-steps", "4"])
    assert says in capsys.readouterr().err


def test_diffusion_has_no_prefill_or_embedding_halves() -> None:
    for flag in (["--embedding"], ["--disaggregation-mode", "prefill"]):
        with pytest.raises(SystemExit):
            parse(["--model-path", "/m", *flag])


def test_sglang_dllm_flags_pass_through_the_worker_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sgl_args, "sglang_parser", lambda: None)  # as on a machine without sglang
    cfg = parse(["--model-path", "/m/llada2", "--engine", "sglang", *SGLANG_DLLM, "--trust-remote-code"])
    assert cfg.engine.engine == "sglang"
    assert cfg.engine.extra_args[: len(SGLANG_DLLM) + 1] == [*SGLANG_DLLM, "--trust-remote-code"]
    sg = build_sglang_config(cfg.engine.extra_args, model_path="/m/llada2")
    i = sg.argv.index("--dllm-algorithm")
    assert list(sg.argv[i : i + 4]) == SGLANG_DLLM


@needs_sglang
def test_sglang_dllm_flags_reach_server_args() -> None:
    cfg = parse(["--model-path", "/m/llada2", "--engine", "sglang", *SGLANG_DLLM])
    server_args = sgl_args.to_server_args(build_sglang_config(cfg.engine.extra_args, model_path="/m/llada2"))
    assert server_args.dllm_algorithm == "LowConfidence"
    assert server_args.dllm_algorithm_config == "/cfg/lowconf.yaml"


def test_make_tiny_diffusion_is_marked_seeded_and_leaves_the_default_alone(tmp_path: Path) -> None:
    from shared.model.tiny import make_tiny

    a = make_tiny(tmp_path / "a", seed=5, diffusion=True)
    b = make_tiny(tmp_path / "b", seed=5, diffusion=True)
    plain = make_tiny(tmp_path / "plain", seed=5)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["vocab_size"] == json.loads((plain / "config.json").read_text())["vocab_size"] + 1
    mask = cfg["shoal_diffusion"]["mask_token_id"]
    added = {t["content"]: t["id"] for t in json.loads((a / "tokenizer.json").read_text())["added_tokens"]}
    assert added["<|mask|>"] == mask == cfg["vocab_size"] - 1
    assert read_diffusion_defaults(a) == DiffusionDefaults(mask_token_id=mask, block_length=8, steps=8)
    assert "shoal_diffusion" not in json.loads((plain / "config.json").read_text())
    assert read_diffusion_defaults(plain).mask_token_id is None


def test_flags_override_the_models_settings_and_refuse_what_cannot_run() -> None:
    model = DiffusionDefaults(mask_token_id=7, block_length=8, steps=8)
    s = resolve_settings(DiffusionConfig(model_path="m", block_length=4, steps=16), model, vocab_size=10)
    assert (s.mask_token_id, s.block_length, s.steps, s.threshold) == (7, 4, 4, None)  # steps clamped to the block
    assert resolve_settings(DiffusionConfig(model_path="m", threshold=0.9), model, 10).threshold == 0.9
    for bad in (DiffusionConfig(model_path="m", steps=0), DiffusionConfig(model_path="m", threshold=1.5),
                DiffusionConfig(model_path="m", mask_token_id=10)):
        with pytest.raises(ValueError):
            resolve_settings(bad, model, 10)
    with pytest.raises(ValueError, match="--dllm-mask-token-id"):
        resolve_settings(DiffusionConfig(model_path="m"), DiffusionDefaults(), 10)
