"""Append a benchmark's results to docs/BENCHMARKS.md with its command and machine."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

DOC_ENV = "SHOAL_BENCH_DOC"  # `just bench --quick` points it at a scratch copy (tests/bench/run_all.py)
DOC = Path(os.environ.get(DOC_ENV) or Path(__file__).resolve().parents[2] / "docs" / "BENCHMARKS.md")


def append_report(title: str, command: str, rows: list[dict], machine: str) -> None:
    DOC.parent.mkdir(exist_ok=True)
    if not DOC.exists():
        DOC.write_text("# Benchmarks\n\nEach section: what ran, the command, the machine, the results.\n")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {title}\n", f"- when: {when}", f"- command: `{command}`", f"- machine: {machine}", "",
             "```"]
    lines += [json.dumps(r) for r in rows]
    lines += ["```", ""]
    with DOC.open("a") as f:
        f.write("\n".join(lines))


def append_table(path: Path | None, module: str, argv: list[str], table: str) -> None:
    """Append `table` under the command that made it (`python -m MODULE ARGV`) to the markdown file `path`."""
    if path is None:
        return
    with path.open("a") as f:
        f.write(f"\n`{' '.join([f'python -m {module}', *argv])}`\n\n{table}\n")
