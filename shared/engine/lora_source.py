"""Where a run-time LoRA load's files come from: a folder under `--lora-root`, or (opt-in) a Hugging Face id.

Everything here blocks (file system, network) and runs in the worker's one
adapter-fetch thread, never on its event loop; the caller bounds it with
`--lora-load-timeout`. Hub downloads take `adapter_config.json` and
`*.safetensors` only (never pickles), after their sizes were checked against
`--max-lora-bytes`. Errors say what is wrong without echoing the file
system (no errno, nothing about paths outside the root).

Test hook: `SHOAL_TEST_LORA_SLOW_FETCH=FRAGMENT=SECONDS` makes a fetch whose
path contains FRAGMENT sleep that long in the fetch thread first (a slow disk
or network), so tests can keep one load in flight while other requests run.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from shared.engine.lora_args import LoraOptions

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ALLOW_PATTERNS = ["adapter_config.json", "*.safetensors"]
SLOW_FETCH_ENV = "SHOAL_TEST_LORA_SLOW_FETCH"


class LoraSourceError(ValueError):
    """A load the worker refuses (a 400 to the client); the message names no host path."""


def check_name(name: str, base_names: tuple[str, ...] = ()) -> None:
    """Adapter names: 1 to 64 of [A-Za-z0-9._-] (not starting with . _ -), and no served model's name."""
    if not NAME_RE.fullmatch(name):
        raise LoraSourceError("lora_name must be 1 to 64 characters of A-Z a-z 0-9 . _ - (starting with a "
                              "letter or digit)")
    if name in base_names:
        raise LoraSourceError(f"lora_name {name!r} is the name of a served model")


def fetch(path: str, opts: LoraOptions) -> str:
    """The local folder of the adapter `path` names; LoraSourceError when it is not allowed or not an adapter."""
    fragment, _, delay = os.environ.get(SLOW_FETCH_ENV, "").rpartition("=")
    if fragment and fragment in path:
        time.sleep(float(delay))
    if not path or len(path) > 1024 or "\0" in path:
        raise LoraSourceError("lora_path must be a folder name under the worker's --lora-root")
    if opts.lora_root:
        root = Path(opts.lora_root).resolve()
        folder = (root / path).resolve()
        if folder != root and root in folder.parents:
            if not folder.is_dir():
                raise LoraSourceError(f"no adapter folder {path!r} under the worker's --lora-root")
            _check_folder(folder, opts.max_lora_bytes)
            return str(folder)
    if opts.allow_hub_download and _is_repo_id(path):
        return _download(path, opts.max_lora_bytes)
    raise LoraSourceError("lora_path must be a folder under the worker's --lora-root"
                          + (" or a Hugging Face id" if opts.allow_hub_download else
                             " (Hugging Face ids need --lora-allow-hub-download)"))


def _is_repo_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", p) for p in parts) \
        and ".." not in path


def _check_folder(folder: Path, max_bytes: int) -> None:
    if not (folder / "adapter_config.json").is_file() or not (folder / "adapter_model.safetensors").is_file():
        raise LoraSourceError("not a peft LoRA folder (adapter_config.json and adapter_model.safetensors)")
    size = sum(f.stat().st_size for f in folder.iterdir() if f.name == "adapter_config.json"
               or f.suffix == ".safetensors")
    if max_bytes and size > max_bytes:
        raise LoraSourceError(f"adapter is {size} bytes; the limit is --max-lora-bytes {max_bytes}")


def _download(repo: str, max_bytes: int) -> str:
    """The adapter's safetensors and config from the hub (sizes checked first), into the hub cache."""
    from fnmatch import fnmatch

    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    try:
        info = HfApi().model_info(repo, files_metadata=True)
        files = [s for s in info.siblings or [] if any(fnmatch(s.rfilename, p) for p in ALLOW_PATTERNS)]
        size = sum(s.size or 0 for s in files)
        if not any(s.rfilename == "adapter_config.json" for s in files):
            raise LoraSourceError(f"{repo} has no adapter_config.json")
        if max_bytes and size > max_bytes:
            raise LoraSourceError(f"adapter {repo} is {size} bytes; the limit is --max-lora-bytes {max_bytes}")
        folder = snapshot_download(repo, allow_patterns=ALLOW_PATTERNS)
    except (HfHubHTTPError, HFValidationError, OSError) as e:
        raise LoraSourceError(f"adapter {repo} could not be downloaded ({type(e).__name__})") from e
    _check_folder(Path(folder), max_bytes)
    return folder
