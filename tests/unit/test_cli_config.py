"""`shoal VERB --config FILE --config-key KEY` reads the verb's flags from the YAML section, as the services
do (the Kubernetes setup Job runs `shoal setup` with the services' own `common` section)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import shared.runtime.provision as provision
from shared.cli import main
from shared.config.args import common_from_args


def test_setup_reads_its_flags_from_a_config_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("common:\n  nats-url: nats://127.0.0.1:4999\n  namespace: prod\n  log-json: true\n")
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(provision, "setup", lambda a: seen.append(a) or 0)
    with pytest.raises(SystemExit) as e:
        main(["setup", "--config", str(cfg), "--config-key", "common", "--namespace", "override"])
    assert e.value.code == 0
    common = common_from_args(seen[0])
    assert (common.nats.url, common.namespace) == ("nats://127.0.0.1:4999", "override")  # command line wins
