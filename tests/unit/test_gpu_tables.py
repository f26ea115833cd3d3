"""docs/bench/GPU_SHARE.md is exactly what the committed raw GPU runs give (no hand-typed figures)."""

from tests.bench.gpu_tables import PAGE, render


def test_gpu_share_page_is_generated_from_the_raw_runs() -> None:
    assert PAGE.read_text() == render(), "run: python -m tests.bench.gpu_tables"
