"""`just` recipes hand their arguments on as given: a quoted argument stays one argument."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("just") is None, reason="just is not installed (pip install rust-just)")
def test_up_keeps_worker_args_as_one_argument(tmp_path: Path) -> None:
    log = tmp_path / "argv.jsonl"
    fake = tmp_path / "fakepython"
    fake.write_text(f"#!/bin/sh\nexec {shutil.which('python3')} -c "
                    f"'import json, sys; open(\"{log}\", \"a\").write(json.dumps(sys.argv[1:]) + \"\\n\")' \"$@\"\n")
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake)}
    subprocess.run(["just", "up", "--worker-args", "--tool-call-parser qwen25 --reasoning-parser qwen3"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0] == ["-m", "shared.cli", "up", "--worker-args", "--tool-call-parser qwen25 --reasoning-parser qwen3"]
