"""Table of a GPU proof's benchmark: shoal on SGLang vs SGLang's own HTTP server.

The measurement runs on the GPU machine (deploy/gpu/prove.sh full, which runs
tests/gpu/prove_cluster.py); this turns its JSON lines into a markdown table:

    python -m tests.bench.bench_sglang /work/.device/N/cluster.log
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

COLUMNS = ("tok_s", "req_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "errors")


def runs(lines: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The measured `d_bench` runs (warm-ups left out), by system."""
    out: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if row.get("step") == "d_bench" and not str(row.get("label", "")).endswith("-warmup"):
            out.setdefault(row["label"], []).append(row)
    return out


def table(by_system: dict[str, list[dict[str, Any]]]) -> str:
    head = "| system | runs | " + " | ".join(f"{c} (median)" for c in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for system, rs in sorted(by_system.items()):
        cells = [_median([r.get(c) for r in rs]) for c in COLUMNS]
        rows.append(f"| {system} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _median(values: list[Any]) -> str:
    nums = [float(v) for v in values if v is not None]
    return f"{statistics.median(nums):g}" if nums else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="cluster.log from deploy/gpu/prove.sh full")
    a = p.parse_args()
    print(table(runs(Path(a.log).read_text().splitlines())))


if __name__ == "__main__":
    main()
