"""SGLang's flags pass through the worker unchanged; shoal adds a few defaults and reads a few settings."""

from __future__ import annotations

import json

import pytest

from shared.engine.sglang import SglangArgsError, build_sglang_config
from shared.engine.sglang import args as sgl_args

HICACHE = ["--enable-hierarchical-cache", "--hicache-ratio", "2.5", "--hicache-write-policy", "write_through",
           "--hicache-storage-backend", "file"]
KV = ["--kv-events-config", '{"publisher":"zmq","endpoint":"tcp://*:5557","topic":"kv@w1"}']
DISAGG = ["--disaggregation-mode", "prefill", "--disaggregation-transfer-backend", "nixl",
          "--disaggregation-bootstrap-port", "9001"]


@pytest.fixture
def raw(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without sglang: the flags are kept as given."""
    monkeypatch.setattr(sgl_args, "sglang_parser", lambda: None)


def _has_sglang() -> bool:
    try:
        return sgl_args.sglang_parser() is not None
    except SglangArgsError:
        return False


needs_sglang = pytest.mark.skipif(not _has_sglang(), reason="sglang is not installed here (GPU extra: shoal[sglang])")


def test_every_flag_survives_in_order(raw: None) -> None:
    argv = [*HICACHE, *KV, *DISAGG, "--mem-fraction-static", "0.3", "--attention-backend", "triton"]
    cfg = build_sglang_config(argv, model_path="/models/tiny")
    assert cfg.parsed is False
    assert cfg.argv[:2] == ("--model-path", "/models/tiny")
    assert list(cfg.argv[2 : 2 + len(argv)]) == argv  # unchanged, same order


def test_settings_read_from_the_passed_flags(raw: None) -> None:
    cfg = build_sglang_config([*KV, *DISAGG, "--host", "::", "--page-size", "32", "--dp-size", "1"],
                              model_path="/m")
    assert cfg.disaggregation_mode == "prefill"
    assert cfg.transfer_backend == "nixl"
    assert cfg.bootstrap_port == 9001
    assert cfg.host == "::"
    assert cfg.page_size == 32
    assert cfg.kv_events is not None
    assert (cfg.kv_events.endpoint, cfg.kv_events.topic) == ("tcp://*:5557", "kv@w1")
    assert "--page-size" in cfg.argv and cfg.argv.count("--page-size") == 1  # no second default


def test_shoal_defaults_added_only_when_absent(raw: None) -> None:
    cfg = build_sglang_config([], model_path="/m")
    argv = list(cfg.argv)
    assert argv[argv.index("--page-size") + 1] == "16" and cfg.page_size == 16
    assert "--skip-tokenizer-init" not in argv and not cfg.skip_tokenizer_init  # SGLang needs it for min_tokens
    kv = json.loads(argv[argv.index("--kv-events-config") + 1])
    assert kv["publisher"] == "zmq" and kv["endpoint"].startswith("ipc://")
    assert kv["replay_endpoint"].startswith("ipc://") and kv["replay_endpoint"] != kv["endpoint"]
    assert cfg.kv_events is not None and cfg.kv_events.endpoint == kv["endpoint"]


def test_kv_events_can_be_turned_off(raw: None) -> None:
    cfg = build_sglang_config(["--kv-events-config", '{"publisher":"null"}'], model_path="/m")
    assert cfg.kv_events is None


def test_data_parallel_gets_tcp_ports(raw: None) -> None:
    cfg = build_sglang_config(["--dp-size", "3"], model_path="/m")
    assert cfg.dp_size == 3
    assert cfg.kv_events is not None and cfg.kv_events.endpoint.startswith("tcp://*:")


def test_same_model_path_is_accepted_once(raw: None) -> None:
    cfg = build_sglang_config(["--model", "/m"], model_path="/m")
    assert cfg.argv.count("/m") == 1


@pytest.mark.parametrize("argv, words", [
    (["--model-path", "/other"], ["--model-path /other", "/m"]),
    (["--dp-size", "2", "--data-parallel-size", "4"], ["--dp-size 2", "--data-parallel-size 4"]),
    (["0.3", "--mem-fraction-static"], ["'0.3'", "no flag"]),
    (["-x", "1"], ["-x"]),
    (["--enable-metrics", "yes"], ["--enable-metrics", "no value"]),
    (["--page-size", "lots"], ["lots"]),
    (["--kv-events-config", "{not json"], ["--kv-events-config"]),
])
def test_bad_flags_are_named(raw: None, argv: list[str], words: list[str]) -> None:
    with pytest.raises(SglangArgsError) as err:
        build_sglang_config(argv, model_path="/m")
    for w in words:
        assert w in str(err.value)


def test_repeated_flag_is_an_override(raw: None) -> None:
    """YAML flags come first, the command line's after: the last one wins, as in argparse."""
    cfg = build_sglang_config(["--page-size", "8", "--page-size", "64"], model_path="/m")
    assert cfg.page_size == 64


@needs_sglang
def test_sglang_parser_checks_and_reads_flags() -> None:
    cfg = build_sglang_config([*HICACHE, *KV, *DISAGG, "--tp", "1"], model_path="/m")
    assert cfg.parsed is True
    assert cfg.disaggregation_mode == "prefill" and cfg.bootstrap_port == 9001
    assert cfg.transfer_backend == "nixl"
    argv = list(cfg.argv)
    for flag in ("--enable-hierarchical-cache", "--hicache-ratio", "--hicache-write-policy",
                 "--hicache-storage-backend", "--kv-events-config"):
        assert flag in argv
    ns = sgl_args._parse(sgl_args.sglang_parser(), argv)  # type: ignore[arg-type]
    assert ns.enable_hierarchical_cache is True and ns.hicache_ratio == 2.5
    assert ns.hicache_write_policy == "write_through" and ns.hicache_storage_backend == "file"
    assert json.loads(ns.kv_events_config)["topic"] == "kv@w1"


@needs_sglang
@pytest.mark.parametrize("argv, words", [
    (["--no-such-flag", "1"], ["--no-such-flag"]),
    (["--tp", "1", "--tensor-parallel-size", "2"], ["--tp 1", "--tensor-parallel-size 2"]),
    (["--disaggregation-mode", "sideways"], ["sideways"]),
])
def test_sglang_parser_names_bad_flags(argv: list[str], words: list[str]) -> None:
    with pytest.raises(SglangArgsError) as err:
        build_sglang_config(argv, model_path="/m")
    for w in words:
        assert w in str(err.value)


def test_the_worker_hands_shared_flags_and_roles_to_sglang() -> None:
    from services.prefill.main import parse as parse_prefill
    from services.worker.args import parse

    cfg = parse(["--engine", "sglang", "--model-path", "/m", "--page-size", "32", "--context-length=8192",
                 "--tp", "2", "--disaggregation-mode", "decode"])
    extra = cfg.engine.extra_args
    assert extra[:2] == ["--tp", "2"]  # SGLang's own, unchanged
    assert ["--page-size", "32"] == extra[extra.index("--page-size"):][:2]
    assert ["--context-length", "8192"] == extra[extra.index("--context-length"):][:2]
    assert ["--disaggregation-mode", "decode"] == extra[extra.index("--disaggregation-mode"):][:2]
    assert "--device" not in extra  # not given: SGLang's default, not the reference engine's "cpu"
    assert (cfg.component, cfg.disaggregation_mode) == ("backend", "decode")
    pre = parse_prefill(["--engine", "sglang", "--model-path", "/m", "--disaggregation-bootstrap-port", "9001"])
    assert (pre.component, pre.disaggregation_mode) == ("prefill", "prefill")
    assert "--disaggregation-bootstrap-port" in pre.engine.extra_args
    assert pre.engine.extra_args.count("--disaggregation-mode") == 1
    with pytest.raises(SystemExit):  # the reference engine takes no SGLang flags
        parse(["--model-path", "/m", "--tp", "2"])


def test_json_whitespace_bounded_unless_the_flags_say_otherwise(raw: None) -> None:
    """As the reference engine (xgrammar any_whitespace=False): SGLang's default let a JSON object fill with
    whitespace up to max_tokens (3 of 8 schemas on an H100)."""
    assert sgl_args.JSON_WHITESPACE_FLAG in build_sglang_config([], model_path="/m").argv
    pattern = ["--constrained-json-whitespace-pattern", "[ ]?"]
    cfg = build_sglang_config(pattern, model_path="/m")
    assert sgl_args.JSON_WHITESPACE_FLAG not in cfg.argv and list(cfg.argv[2:4]) == pattern
    cfg = build_sglang_config([sgl_args.JSON_WHITESPACE_FLAG], model_path="/m")
    assert cfg.argv.count(sgl_args.JSON_WHITESPACE_FLAG) == 1
