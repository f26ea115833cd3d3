"""GPU proof: shoal against SGLang's own server, alternating pairs on one GPU (issue 15).

    prove_compare.py MODEL_DIR OUTDIR [--concurrency 256 128 32] [--pairs 5] [--seconds 20]
                     [--prompt-words 250] [--max-tokens 256] [--mem-fraction 0.40]

Both systems resident (shoal: nats-server + frontend + one SGLang worker; `python -m sglang.launch_server`),
started together with the same SGLang flags. Each is warmed equally (one run of 2 x concurrency requests
at each concurrency) before anything is recorded; the slower warm run sizes the recorded runs, the same
number of requests for both systems, to last about `--seconds`. Then, per concurrency, `--pairs` pairs of
runs, the order flipped every pair (ABBA) and a fresh seed per run (~1k-token prompts, 256 output tokens).
Each run is one JSON line, written to OUTDIR/compare.jsonl as soon as it ends (a call cut short by the
machine's time limit keeps what finished), with the machine, the commit and the flags.

Check (exit status 1 when it fails): at every concurrency measured, shoal's median TTFT p50 is at most
1.0x SGLang's and its median output tokens/s at least 1.0x; any request error fails it too.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from prove import emit, exit_status
from prove_share import Share, _machine, sglang_flags


def _median(records: list[dict[str, Any]], conc: int, system: str, key: str) -> float | None:
    xs = [r[key] for r in records if r["concurrency"] == conc and r["system"] == system and r.get(key) is not None]
    return statistics.median(xs) if xs else None


def verdict(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per concurrency: medians of each system's runs and shoal / SGLang ratios."""
    out: dict[str, Any] = {"ok": True, "by_concurrency": {}}
    for conc in sorted({r["concurrency"] for r in records}):
        ttft = (_median(records, conc, "shoal", "ttft_p50_ms"), _median(records, conc, "sglang", "ttft_p50_ms"))
        tok = (_median(records, conc, "shoal", "tok_s"), _median(records, conc, "sglang", "tok_s"))
        if None in ttft or None in tok:
            out["ok"] = False
            continue
        row = {"ttft_ratio": round(ttft[0] / ttft[1], 3), "tok_s_ratio": round(tok[0] / tok[1], 3)}
        out["by_concurrency"][conc] = row
        out["ok"] &= row["ttft_ratio"] <= 1.0 and row["tok_s_ratio"] >= 1.0
    out["ok"] &= bool(out["by_concurrency"]) and not any(r.get("errors") for r in records)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("outdir")
    p.add_argument("--concurrency", type=int, nargs="+", default=[256, 128, 32])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=20.0, help="about how long each recorded run lasts")
    p.add_argument("--mem-fraction", type=float, default=0.40)
    p.add_argument("--prompt-words", type=int, default=250)
    p.add_argument("--max-tokens", type=int, default=256)
    a = p.parse_args()
    a.engine, a.requests = "sglang", 0
    out = Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="prove-compare-"))
    share = Share(a, logs)
    meta = {**_machine(), "flags": sglang_flags(a.mem_fraction), "prompt_words": a.prompt_words,
            "max_tokens": a.max_tokens}
    emit("compare_meta", **meta)
    ports = {"shoal": share.http_port, "sglang": share.sglang_port}
    records: list[dict[str, Any]] = []
    rc = 1

    def run(phase: str, system: str, conc: int, requests: int) -> float:
        result = share._loadgen(ports[system], requests, conc, a.max_tokens, f"{phase}-{system}", 400)
        rec = {"kind": "load", "phase": phase, "system": system, "seed": share.seed, "requests": requests, **result}
        emit("compare_run", **rec)
        if phase == "pair":
            records.append(rec)
            with open(out / "compare.jsonl", "a") as f:
                f.write(json.dumps({**meta, **rec}) + "\n")
        return float(result.get("secs") or 0.0)

    try:
        share.start_base()
        server = threading.Thread(target=lambda: emit("compare_ready", system="sglang", seconds=share.start_server()))
        server.start()
        emit("compare_ready", system="shoal", seconds=share.start_worker("shoal"))
        server.join()
        sizes = {}
        for conc in a.concurrency:  # equal warming, not recorded; the slower warm run sizes this concurrency's runs
            secs = max(run("warm", system, conc, 2 * conc) for system in ("shoal", "sglang"))
            sizes[conc] = conc * max(2, math.ceil(a.seconds / max(secs, 0.1) * 2))
        for conc in a.concurrency:
            for i in range(a.pairs):
                for system in (("shoal", "sglang") if i % 2 == 0 else ("sglang", "shoal")):
                    run("pair", system, conc, sizes[conc])
        result = verdict(records)
        emit("compare_verdict", **result)
        rc = 0 if result["ok"] else 1
    except Exception as e:
        emit("compare_failed", error=repr(e)[:800])
        if records:
            emit("compare_partial", **verdict(records))
    finally:
        share.stop()
        for path in logs.glob("*.log"):
            if path.name != "nats.log":
                (out / f"compare-{path.name}").write_bytes(path.read_bytes()[-4_000_000:])
    raise SystemExit(exit_status(rc))


if __name__ == "__main__":
    main()
