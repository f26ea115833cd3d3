"""Append a benchmark's results to docs/BENCHMARKS.md with its command and machine."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "BENCHMARKS.md"


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
