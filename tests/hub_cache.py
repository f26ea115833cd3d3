"""A Hugging Face hub cache made from local folders, in the layout huggingface_hub itself writes.

`HF_HOME/hub/models--{org}--{name}/` holds `blobs/<sha256>` (the file contents),
`snapshots/<commit>/<file>` (relative symlinks to the blobs) and `refs/main`
(the commit). No network: tests point HF_HOME here and set HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_to_cache(hf_home: Path, repo_id: str, src: Path, commit: str | None = None, ref: str = "main") -> Path:
    """Put every file of `src` into the cache as `repo_id` at `commit` (named by `ref`); the snapshot dir."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def offline_env(hf_home: Path) -> dict[str, str]:
    """The environment of a service that reads this cache and never reaches the network."""
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hf_home / "hub")}
