"""docs/FLEET.md and docs/plots/fleet_*.png from the raw fleet runs (docs/bench/fleet.jsonl); never typed.

    python -m tests.bench.fleet_report [docs/bench/fleet.jsonl]

The latest row of each (variant, N, NATS nodes) is shown; "before" is the runtime as it was (a KV write per
lease per second, load re-sent every 2 s idle; tree made by tests/bench/fleet_before.py), "after" this
branch's (heartbeats, load every 10 s idle).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.ticker import ScalarFormatter

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "FLEET.md"
PLOTS = ROOT / "docs" / "plots"


def latest(rows: list[dict]) -> dict[tuple[str, int, int], dict]:
    out: dict[tuple[str, int, int], dict] = {}
    for r in rows:
        out[(r["variant"], r["n"], r["nats_nodes"])] = r
    return out


def g(r: dict, *path: str) -> object:
    for p in path:
        if not isinstance(r, dict) or p not in r:
            return None
        r = r[p]
    return r


COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("routable s", ("routable_s",)),
    ("msgs/s", ("steady", "msgs_per_s")),
    ("KB/s", ("steady", "bytes_per_s")),
    ("msgs/s per worker", ("steady", "per_worker_msgs_per_s")),
    ("B/s per worker", ("steady", "per_worker_bytes_per_s")),
    ("NATS CPU %", ("nats", "cpu_pct")),
    ("NATS MB", ("nats", "rss_mb")),
    ("JetStream KB", ("nats", "js_store_kb")),
    ("frontend CPU %", ("frontend", "cpu_pct")),
    ("frontend MB", ("frontend", "rss_mb")),
    ("fleet proc CPU %", ("fleet_proc", "cpu_pct")),
    ("decision p99 ms, live (wall)", ("decision_p99_ms",)),
    ("decision p99 ms, CPU", ("decision_inproc", "cpu_p99_ms")),
    ("decision p99 ms, wall", ("decision_inproc", "wall_p99_ms")),
    ("KV backlog (max)", ("kv_backlog", "max_pending")),
    ("killed routable s", ("killed_routable_s",)),
    ("churn ok/sent", ()),
]


def cell(r: dict, name: str, path: tuple[str, ...]) -> str:
    if name == "churn ok/sent":
        c = r.get("churn")
        return f"{c['ok']}/{c['sent']}" if c else "-"
    v = g(r, *path)
    if v is None:
        return "-"
    if name == "KB/s":
        return f"{float(v) / 1024:.1f}"  # type: ignore[arg-type]
    return f"{v}"


def table(sel: dict[tuple[str, int, int], dict]) -> str:
    head = "| variant | NATS nodes | N | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for (variant, n, nodes), r in sorted(sel.items(), key=lambda kv: (kv[0][2], kv[0][0] != "before", kv[0][1])):
        lines.append(f"| {variant} | {nodes} | {n} | " + " | ".join(cell(r, c, p) for c, p in COLUMNS) + " |")
    return "\n".join(lines)


def ratio_lines(sel: dict[tuple[str, int, int], dict]) -> list[str]:
    out = []
    for (variant, n, nodes), r in sorted(sel.items()):
        if variant != "after":
            continue
        b = sel.get(("before", n, nodes))
        if b is None:
            continue
        bm, am = g(b, "steady", "per_worker_msgs_per_s"), g(r, "steady", "per_worker_msgs_per_s")
        bb, ab = g(b, "steady", "per_worker_bytes_per_s"), g(r, "steady", "per_worker_bytes_per_s")
        if bm and am and bb and ab:
            b_in, a_in = g(b, "steady", "in_msgs_per_s"), g(r, "steady", "in_msgs_per_s")
            sent = (f"; messages into the NATS server(s), per worker: {float(b_in) / n:.2f} → "  # type: ignore[arg-type]
                    f"{float(a_in) / n:.2f}/s" if b_in and a_in else "")  # type: ignore[arg-type]
            out.append(f"- N = {n}, {nodes} NATS node(s): per worker {bm} → {am} messages/s "
                       f"(**{float(bm) / float(am):.1f}x fewer**), {bb} → {ab} bytes/s "  # type: ignore[arg-type]
                       f"({float(bb) / float(ab):.1f}x fewer){sent}")  # type: ignore[arg-type]
    return out


def capacity(sel: dict[tuple[str, int, int], dict]) -> list[str]:
    """Workers per NATS node, frontend and router, linear from the largest measured N of each variant."""
    out = ["| variant | basis N | NATS CPU % per 1,000 workers | NATS msgs/s per 1,000 workers | "
           "frontend+router MB per 1,000 workers | frontend CPU % per 1,000 workers | "
           "workers per NATS node at 50 % of a core (extrapolated, unmeasured past the basis) |",
           "|---|---|---|---|---|---|---|"]
    for variant in sorted({k[0] for k in sel}):
        single = [r for (v, _, nodes), r in sel.items() if v == variant and nodes == 1 and r.get("steady")]
        if not single:
            continue
        r = max(single, key=lambda r: r["n"])
        small = min(single, key=lambda r: r["n"])
        n = r["n"]
        cpu = float(r["nats"]["cpu_pct"]) * 1000 / n
        msgs = float(r["steady"]["msgs_per_s"]) * 1000 / n
        dn = n - small["n"]
        mem = (float(r["frontend"]["rss_mb"]) - float(small["frontend"]["rss_mb"])) * 1000 / dn if dn else 0.0
        fcpu = float(r["frontend"]["cpu_pct"]) * 1000 / n
        per_node = int(50 / cpu * 1000) if cpu > 0 else 0
        out.append(f"| {variant} | {n} | {cpu:.1f} | {msgs:.0f} | {mem:.0f} | {fcpu:.1f} | {per_node:,} |")
    return out


def plot(sel: dict[tuple[str, int, int], dict], out: Path) -> list[str]:
    PLOTS.mkdir(parents=True, exist_ok=True)
    figs = [("fleet_msgs_per_worker.png", ("steady", "per_worker_msgs_per_s"), "NATS messages/s per idle worker"),
            ("fleet_nats_msgs.png", ("steady", "msgs_per_s"), "NATS messages/s, whole fleet idle"),
            ("fleet_nats_cpu.png", ("nats", "cpu_pct"), "nats-server CPU % (one core = 100)"),
            ("fleet_frontend_mb.png", ("frontend", "rss_mb"), "frontend (with its KV router) resident MB"),
            ("fleet_routable_s.png", ("routable_s",), "seconds until all N are routable")]
    names = []
    for fname, path, title in figs:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for variant in sorted({k[0] for k in sel}):
            pts = sorted((n, g(r, *path)) for (v, n, nodes), r in sel.items() if v == variant and nodes == 1)
            pts = [(n, float(y)) for n, y in pts if y]  # type: ignore[arg-type]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=variant)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("simulated workers N (one nats-server)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / fname, dpi=90)
        plt.close(fig)
        names.append(fname)
    return names


def write_report(path: Path = ROOT / "docs" / "bench" / "fleet.jsonl") -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    sel = latest(rows)
    meta = {(r["variant"], r["commit"], r["machine"], " ".join(r.get("argv", []))) for r in sel.values()}
    pics = plot(sel, PLOTS)
    text = [
        "# A thousand workers on one machine",
        "",
        "GENERATED by `python -m tests.bench.fleet_report` from `docs/bench/fleet.jsonl` (written by",
        "`just bench --only fleet`, tests/bench/bench_fleet.py); do not edit by hand.",
        "",
        "N simulated workers run in one process (`python -m services.worker --engine mock --simulate N`: the real",
        "worker runtime each, around its own mock engine; `--simulate-churn R`: R workers a second drain and R",
        "join; `--simulate-start-concurrency K`: K start at once), against one nats-server (and a 3-node cluster),",
        "with a frontend (`--router-mode kv`, migration on) watching. Traffic is the NATS server's own",
        "counters (/varz, in + out) while the fleet idles, less the frontend-only baseline; per worker = that / N.",
        "CPU % is of one core. Decision p99: *live* is the frontend's shoal_router_decision_seconds histogram",
        "(wall time, the requests of the run); *CPU* and *wall* are 2,000 decisions over N candidates in the",
        "bench process (a tenth of the workers holding prefixes): thread CPU time is the decision's own cost,",
        "wall time adds the preemption of a machine shared by other jobs. The KV backlog is the largest",
        "JetStream consumer backlog (the router's",
        "KV-event ingest lag in messages) after the request phase. *killed routable s*: a SIGKILLed worker",
        "(a real one-worker process) until the frontend stops routing to it. *churn*: a second fleet where",
        "10 workers a second drain and 10 join while requests flow; ok/sent counts every request.",
        "",
        "Runs:",
        *[f"- {v}: code `{c}`, {m}, `{a}`" for v, c, m, a in sorted(meta)],
        "",
        "## Per-worker steady-state NATS traffic, before and after",
        "",
        *(ratio_lines(sel) or ["- (no before/after pair yet)"]),
        "",
        "Before, an idle worker put its instance record and its model card into JetStream every second (each",
        "put acknowledged, and delivered to every watcher of its bucket) and re-sent its load every 2 s. Where",
        "the before fleet sent fewer messages per worker at a larger N, its process could no longer keep up",
        "with its own lease refreshes (the first wall: at N = 1,000 that is 2,000 acknowledged writes a second",
        "from one process). After, liveness is one core-NATS heartbeat a second per process",
        "(shared/runtime/heartbeat.py), the KV records are refreshed every 10 s as a backstop, and an",
        "unchanged load is re-sent every 10 s.",
        "",
        "## All measurements",
        "",
        table(sel),
        "",
        "## Capacity, linear from the largest measured N (basis for docs/DEPLOY.md)",
        "",
        *capacity(sel),
        "",
        *[f"![{p}](plots/{p})" for p in pics],
        "",
    ]
    DOC.write_text("\n".join(text))
    print(f"[fleet] wrote {DOC.relative_to(ROOT)} and {len(pics)} plots", flush=True)


if __name__ == "__main__":
    write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "bench" / "fleet.jsonl")
