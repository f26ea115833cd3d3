"""tests/bench/plots.py draws from the raw rows of a BENCHMARKS.md: the latest section of each kind."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.plots import latest, sections, write_plots


def _section(title: str, when: str, rows: list[dict]) -> str:
    return "\n".join([f"## {title}", "", f"- when: {when}", "", "```", *map(json.dumps, rows), "```", ""])


def _frontend(c: int, tok_s: float, system: str = "shoal") -> dict:
    return {"label": f"{system} c={c}", "concurrency": c, "tok_s": tok_s, "ttft_p50_ms": 5.0, "ttft_p99_ms": 9.0}


DOC = "# Benchmarks\n\n" + "".join([
    _section("Frontend: old", "day 1", [_frontend(16, 1.0)]),
    _section("KV router: index cost and routing quality", "day 1",
             [{"label": "kv index", "decision_p50_us": 190.0},
              {"label": "round-robin", "cached_frac": 0.3}, {"label": "kv", "cached_frac": 0.8}]),
    _section("Frontend: new", "day 2", [_frontend(4, 10.0), _frontend(16, 20.0), _frontend(16, 15.0, "dynamo")]),
    "## Reference engine\n\n| a table | not rows |\n",
])


def test_sections_keep_rows_and_latest_picks_the_newest_with_the_keys() -> None:
    found = sections(DOC)
    assert [s.title for s in found] == ["Frontend: old", "KV router: index cost and routing quality",
                                        "Frontend: new", "Reference engine"]
    assert found[2].when == "day 2" and [r["tok_s"] for r in found[2].rows] == [10.0, 20.0, 15.0]
    assert latest(found, "Frontend", ("concurrency", "tok_s")) is found[2]
    assert latest(found, "KV router", ("cached_frac",)) is found[1]
    assert latest(found, "KV routing side by side", ("cached_frac",)) is None


def test_write_plots_draws_pngs_from_the_results(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(DOC)
    written = write_plots(doc, tmp_path / "plots")
    assert [p.name for p in written] == ["throughput.png", "cached.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_plots(tmp_path / "missing.md", tmp_path / "none") == []
