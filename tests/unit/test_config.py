"""Service flags as an operator writes them: on the command line, in the environment, in a YAML file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from shared.config import ConfigError, NatsOptions, add_common_args, common_from_args, expand_config_argv


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_common_args(p)
    p.add_argument("--model-path")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--enable-metrics", action="store_true")
    p.add_argument("--hosts", nargs="+")
    p.add_argument("--kv-events-config")
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    return parser().parse_args(expand_config_argv(argv))


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return str(path)


CLUSTER = """
decode:
  tiny:
    model-path: /models/tiny
    max_num_seqs: 8
    --enable-metrics: true
    log-json: false
    hosts: [a, b]
    kv-events-config: {publisher: zmq, endpoint: "tcp://*:5557"}
    namespace: "-dash-first"
  Qwen2.5-0.5B:
    model-path: /models/qwen
"""


def test_defaults_build_a_typed_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SHOAL_NAMESPACE", "NATS_URL", "SHOAL_SYSTEM_PORT", "SHOAL_LOG_LEVEL", "SHOAL_LOG_JSON"):
        monkeypatch.delenv(var, raising=False)
    common = common_from_args(parse([]))
    assert common.namespace == "shoal" and common.nats.url == "nats://127.0.0.1:4222"
    assert (common.system_host, common.system_port) == ("127.0.0.1", 0)
    assert (common.log_level, common.log_json) == ("info", False)
    assert common.otlp_endpoint is None


def test_environment_sets_defaults_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_NAMESPACE", "prod")
    monkeypatch.setenv("NATS_URL", "nats://10.0.0.1:4222")
    monkeypatch.setenv("SHOAL_SYSTEM_PORT", "9090")
    monkeypatch.setenv("NATS_PASSWORD", "from-env")
    common = common_from_args(parse(["--namespace", "staging", "--log-level", "DEBUG"]))
    assert (common.namespace, common.nats.url, common.system_port) == ("staging", "nats://10.0.0.1:4222", 9090)
    assert common.log_level == "debug" and common.nats.password == "from-env"


def test_repr_hides_nats_secrets() -> None:
    ns = parse(["--nats-url", "nats://bob:pa55@127.0.0.1:4222", "--nats-user", "bob", "--nats-password", "hunter2",
                "--nats-token", "tok123", "--nats-nkey-seed", "/secrets/seed.nk"])
    common = common_from_args(ns)
    text = repr(common) + str(common.nats)
    for secret in ("pa55", "hunter2", "tok123", "seed.nk"):
        assert secret not in text
    assert "auth=yes" in text and common.nats.password == "hunter2"
    assert "auth=no" in repr(NatsOptions())


def test_yaml_section_by_dotted_key(tmp_path: Path) -> None:
    path = write(tmp_path, CLUSTER)
    ns = parse(["--config", path, "--config-key", "decode.tiny"])
    assert ns.model_path == "/models/tiny" and ns.max_num_seqs == 8
    assert ns.enable_metrics is True and ns.log_json is False
    assert ns.hosts == ["a", "b"]
    assert ns.kv_events_config == '{"publisher":"zmq","endpoint":"tcp://*:5557"}'
    assert ns.namespace == "-dash-first"
    assert common_from_args(ns).namespace == "-dash-first"


def test_yaml_key_containing_dots(tmp_path: Path) -> None:
    path = write(tmp_path, CLUSTER)
    assert parse([f"--config={path}", "--config-key=decode.Qwen2.5-0.5B"]).model_path == "/models/qwen"


def test_expanded_argv_shape(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\nflag_on: true\nflag_off: false\nitems: [x, true, 3]\n")
    assert expand_config_argv(["--config", path, "--b", "2"]) == [
        "--a=1", "--flag-on", "--items", "x", "true", "3", "--b", "2"]


def test_explicit_flags_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, CLUSTER)
    ns = parse(["--max-num-seqs", "32", "--config", path, "--config-key", "decode.tiny", "--hosts", "c"])
    assert ns.max_num_seqs == 32 and ns.hosts == ["c"] and ns.model_path == "/models/tiny"


def test_argv_without_config_is_untouched() -> None:
    argv = ["--model-path", "/m", "--tp-size", "2", "--", "--config", "x"]
    assert expand_config_argv(argv) == argv


def test_config_flag_must_be_expanded(tmp_path: Path) -> None:
    ns = parser().parse_args(["--config", write(tmp_path, "a: 1\n")])
    with pytest.raises(ValueError, match="expand_config_argv"):
        common_from_args(ns)


@pytest.mark.parametrize(("text", "key", "message"), [
    ("decode:\n  tiny: {}\n", "decode.small", "key 'small' not found; available: tiny"),
    ("decode:\n  tiny: [a, b]\n", "decode.tiny", "section is a list, expected a mapping"),
    ("decode: [a]\n", "decode.tiny", "cannot descend into a list"),
    ("decode:\n  tiny: {a: 1\n", "decode.tiny", "invalid YAML"),
    ("- a\n- b\n", None, "section is a list"),
    ("1: 2\n", None, "flag name must be a non-empty string"),
])
def test_config_errors_name_the_file_and_key(tmp_path: Path, text: str, key: str | None, message: str) -> None:
    path = write(tmp_path, text)
    argv = ["--config", path] + (["--config-key", key] if key else [])
    with pytest.raises(ConfigError, match=message) as err:
        expand_config_argv(argv)
    assert path in str(err.value) and err.value.file == path
    if key:
        assert repr(key) in str(err.value)


def test_invalid_yaml_says_where(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\nb: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        expand_config_argv(["--config", path])


def test_missing_file_and_missing_values(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=f"config file not found.*{missing}"):
        expand_config_argv(["--config", missing])
    with pytest.raises(ConfigError, match="--config needs a value"):
        expand_config_argv(["--config"])
    with pytest.raises(ConfigError, match="--config-key needs --config"):
        expand_config_argv(["--config-key", "a.b"])
