"""Plots of the benchmark results, drawn from the raw rows in a BENCHMARKS.md (never typed by hand).

    python -m tests.bench.plots                      # docs/BENCHMARKS.md -> docs/plots/*.png
    python -m tests.bench.plots --doc D.md --out DIR

Each benchmark appends a section whose fenced block holds one JSON row per measurement
(tests/bench/report.py). The latest section of each kind is drawn:

- throughput.png: output tokens/s and TTFT (p50, p99) against concurrency, one line per system
  (the label before " c=": shoal, dynamo), from the latest "Frontend" section;
- cached.png: the fraction of prompt tokens found cached per routing mode, from the latest
  "KV router" section (shoal's modes) and the latest "KV routing side by side" section (per system).
"""

from __future__ import annotations

import argparse
import json
import re
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.ticker import NullLocator, ScalarFormatter

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "BENCHMARKS.md"
OUT = ROOT / "docs" / "plots"
COLORS = {"shoal": "tab:blue", "dynamo": "tab:orange"}  # one colour per system in every plot


@dataclass
class Section:
    title: str
    when: str = ""
    rows: list[dict] = field(default_factory=list)


def sections(text: str) -> list[Section]:
    """Every `## ` section with the JSON rows of its fenced blocks (lines that parse as objects)."""
    out: list[Section] = []
    for line in text.splitlines():
        if line.startswith("## "):
            out.append(Section(line[3:].strip()))
        elif out and line.startswith("- when: "):
            out[-1].when = line[len("- when: "):].strip()
        elif out and line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                out[-1].rows.append(row)
    return out


def latest(all_sections: list[Section], prefix: str, needs: tuple[str, ...]) -> Section | None:
    """The last section whose title starts with `prefix` and that has rows with every key in `needs`."""
    found = [s for s in all_sections if s.title.startswith(prefix)
             and any(all(k in r for k in needs) for r in s.rows)]
    return found[-1] if found else None


def _system(label: str) -> str:
    return re.split(r"\s+c=", label)[0]


def _title(section: Section, width: int) -> str:
    return "\n".join([*textwrap.wrap(section.title, width), section.when])


def plot_throughput(section: Section, path: Path) -> None:
    by_system: dict[str, list[dict]] = defaultdict(list)
    for r in section.rows:
        if "concurrency" in r and "tok_s" in r:
            by_system[_system(r["label"])].append(r)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system, rows in sorted(by_system.items()):
        rows.sort(key=lambda r: r["concurrency"])
        x = [r["concurrency"] for r in rows]
        color = COLORS.get(system)
        left.plot(x, [r["tok_s"] for r in rows], marker="o", color=color, label=system)
        right.plot(x, [r["ttft_p50_ms"] for r in rows], marker="o", color=color, label=f"{system} p50")
        right.plot(x, [r["ttft_p99_ms"] for r in rows], marker="s", linestyle="--", color=color,
                   label=f"{system} p99")
    ticks = sorted({r["concurrency"] for rows in by_system.values() for r in rows})
    for ax, ylabel in ((left, "output tokens/s"), (right, "time to first token (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    left.set_title("Throughput")
    right.set_title("TTFT")
    fig.suptitle(_title(section, 100), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cached(parts: list[Section], path: Path) -> None:
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4.2), squeeze=False)
    for ax, section in zip(axes[0], parts, strict=True):
        rows = [r for r in section.rows if "cached_frac" in r]
        systems = sorted({r["label"].split()[0] for r in rows if len(r["label"].split()) > 1}) or ["shoal"]
        modes = list(dict.fromkeys(r["label"].split()[-1] for r in rows))
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            values = {r["label"].split()[-1]: r["cached_frac"] for r in rows
                      if len(systems) == 1 or r["label"].split()[0] == system}
            xs = [m + (i - (len(systems) - 1) / 2) * width for m in range(len(modes))]
            bars = ax.bar(xs, [values.get(m, 0.0) for m in modes], width, label=system, color=COLORS.get(system))
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.set_xticks(range(len(modes)), modes)
        ax.set_ylim(0, 1)
        ax.set_ylabel("prompt tokens found cached")
        ax.set_title(_title(section, 55), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        if len(systems) > 1:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(doc: Path, out: Path) -> list[Path]:
    """Draw every plot the results in `doc` allow; the PNGs written."""
    found = sections(doc.read_text()) if doc.is_file() else []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    frontend = latest(found, "Frontend", ("concurrency", "tok_s", "ttft_p50_ms", "ttft_p99_ms"))
    if frontend is not None:
        plot_throughput(frontend, out / "throughput.png")
        written.append(out / "throughput.png")
    cached = [s for s in (latest(found, "KV router", ("cached_frac",)),
                          latest(found, "KV routing side by side", ("cached_frac",))) if s is not None]
    if cached:
        plot_cached(cached, out / "cached.png")
        written.append(out / "cached.png")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--doc", type=Path, default=DOC, help="the results (default: docs/BENCHMARKS.md)")
    ap.add_argument("--out", type=Path, default=OUT, help="where the PNGs go (default: docs/plots)")
    a = ap.parse_args(argv)
    for path in write_plots(a.doc, a.out):
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
