"""docs/SECURITY-infra.md's NATS roles table is the config renderer's own output (issue 22)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_nats_roles_table_is_generated_from_the_renderer() -> None:
    from tests.unit.deploy_files import _render_config

    mod = _render_config()
    doc = (ROOT / "docs" / "SECURITY-infra.md").read_text()
    table = doc.split("<!-- nats-roles:begin -->\n", 1)[1].split("<!-- nats-roles:end -->", 1)[0]
    assert table == mod.markdown(), "regenerate the table: python deploy/nats/render_config.py --markdown"
    setup = next(line for line in table.splitlines() if line.startswith("| **setup**"))
    assert "$JS.API.>" in setup
    others = [line for line in table.splitlines()[2:] if not line.startswith("| **setup**")]
    for verb in ("STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE", "STREAM.PURGE"):
        assert not any(verb in line for line in others), verb
