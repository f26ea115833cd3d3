"""Shared by the AIPerf checks: the environment AIPerf needs, running it, reading its export, recording a row."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def aiperf_env() -> dict[str, str]:
    """This environment without HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE: AIPerf 0.13 then resolves a local tokenizer
    folder as a hub cache snapshot and fails; nothing is downloaded (local folder, server on 127.0.0.1)."""
    return {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}


def run_aiperf(cmd: list[str], out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Runs AIPerf (its artifact dir is `out`) and returns the process and its JSON export ({} when absent)."""
    run = subprocess.run(cmd, env=aiperf_env(), capture_output=True, text=True, timeout=600)
    export = out / "profile_export_aiperf.json"
    return run, (json.loads(export.read_text()) if export.is_file() else {})


def verdict(run: subprocess.CompletedProcess[str], result: dict[str, Any], requests: int) -> dict[str, Any]:
    """Counts, error rate and errors from AIPerf's export; `passed` only when every request completed cleanly."""
    completed = int(result.get("completed_request_count", {}).get("avg", 0))
    error_rate = float(result.get("request_error_rate", {}).get("avg", 100.0))
    errors = result.get("error_summary", ["no export"])
    ok = run.returncode == 0 and completed == requests and error_rate == 0.0 and not errors
    if not ok:
        print(run.stdout[-3000:], run.stderr[-2000:], sep="")
    return {"passed": ok, "completed": completed, "requests": requests, "error_rate_pct": error_rate,
            "errors": errors}


def record(path: Path, row: dict[str, Any], command: str) -> None:
    """Appends `row` with the commit, machine, command and time as one JSON line."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    row = {**row, "commit": commit, "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
           "command": command, "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def aiperf_parser(doc: str | None, requests: int) -> argparse.ArgumentParser:
    """The flags every AIPerf check takes (the binary, how many requests, how many at once, where to record)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aiperf", default=os.environ.get("AIPERF") or shutil.which("aiperf"))
    ap.add_argument("--requests", type=int, default=requests)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--record", type=Path, default=None, help="append the raw result (JSON line) to this file")
    return ap


def found(aiperf: str | None) -> bool:
    """Whether the aiperf binary is there; says how to get it when not."""
    if not aiperf:
        print("aiperf not found: pip install aiperf (a virtual environment of its own), then --aiperf PATH",
              file=sys.stderr)
    return bool(aiperf)
