"""docs/bench/GPU_*.md are exactly what the committed raw GPU runs give (no hand-typed figures)."""

import json
from pathlib import Path

import pytest

from tests.bench import gpu_tables


def test_gpu_pages_are_generated_from_the_raw_runs() -> None:
    for path, text in gpu_tables.render_all().items():
        assert path.read_text() == text, f"{path.name}: run python -m tests.bench.gpu_tables"


def test_the_compare_page_gives_medians_ratios_and_spread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [{"commit": "abc", "gpu": "H200", "flags": ["--x"], "system": s, "concurrency": 256, "ttft_p50_ms": t,
             "tok_s": k} for s, t, k in [("shoal", 300, 20000), ("sglang", 400, 19000), ("sglang", 380, 21000),
                                          ("shoal", 320, 22000)]]
    (tmp_path / "gpu_compare_abc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    monkeypatch.setattr(gpu_tables, "BENCH", tmp_path)
    page = gpu_tables.render_compare()
    want = "| 256 | 2 | 310 (300-320) | 390 (380-400) | 0.79x | 21000 (20000-22000) | 20000 (19000-21000) | 1.05x |"
    assert want in page
