"""The "before" code of the fleet bench: the runtime as it was at a commit, plus this branch's simulator.

    python -m tests.bench.fleet_before /tmp/fleet-before [77fe6f6]
    python -m tests.bench.bench_fleet --variant before --code-root /tmp/fleet-before --code-commit "77fe6f6+simulator"

The tree is `git archive COMMIT` with this checkout's worker modules that make `--simulate N` (args, fleet,
fleet_args, lifecycle, preset) copied in, and the fleet's shared heartbeat sender taken out (that runtime
has none): every simulated worker then leases, refreshes and reports exactly as a worker did at COMMIT.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = "77fe6f6"  # the commit issue 26 started from
SIMULATOR = ("args", "fleet", "fleet_args", "lifecycle", "preset")


def make_before(out: Path, commit: str = BASE) -> Path:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    blob = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(out, filter="data")
    for name in SIMULATOR:
        shutil.copy(ROOT / "services" / "worker" / f"{name}.py", out / "services" / "worker" / f"{name}.py")
    fleet = out / "services" / "worker" / "fleet.py"
    text = fleet.read_text()
    for old, new in [("from shared.runtime.heartbeat import HeartbeatSender\n", ""),
                     ("from protocol import subjects\n", ""),
                     ("        self.heartbeats = HeartbeatSender(base.nc, subjects.heartbeat_subject(base.namespace), "
                      "base.discovery.ttl)\n", ""),
                     ("base.replicas, self.heartbeats)", "base.replicas)"),
                     ("        await self.heartbeats.stop()\n", "")]:
        if old not in text:
            raise SystemExit(f"fleet.py changed: cannot take out {old.strip()!r}")
        text = text.replace(old, new)
    fleet.write_text(text)
    return out


if __name__ == "__main__":
    print(make_before(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else BASE))
