"""Where a model's files are: a local directory, or a Hugging Face id resolved through the hub cache.

Every service that reads model files resolves `--model-path` here, once, at
start-up (before it serves anything). An id (`org/name`, optional
`--revision`) is looked up in huggingface_hub's own cache (`HF_HOME`,
`HF_HUB_CACHE`); with `HF_HUB_OFFLINE=1` nothing is fetched, otherwise a
missing model downloads with huggingface_hub's progress bar.
"""

from __future__ import annotations

import os

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError


class ModelNotFoundError(ValueError):
    """Neither a local model directory nor a Hugging Face id (at that revision) that can be had."""


def is_hub_id(model: str) -> bool:
    """`org/name` (no local directory of that name): a Hugging Face id."""
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~")) and not os.path.exists(model)


def resolve_model(model: str, revision: str | None = None) -> str:
    """The local directory holding `model`'s files; anything but a hub id is a local path, returned as it is."""
    if not is_hub_id(model):
        return model
    at = f" at revision {revision!r}" if revision else ""
    try:
        return snapshot_download(model, revision=revision)
    except (LocalEntryNotFoundError, HfHubHTTPError, HFValidationError, OSError) as e:
        offline = " (HF_HUB_OFFLINE is set: nothing was downloaded)" if constants.HF_HUB_OFFLINE else ""
        raise ModelNotFoundError(f"model {model!r}{at} is not in the Hugging Face cache {constants.HF_HUB_CACHE}"
                                 f"{offline} and could not be downloaded: {type(e).__name__}: {e}") from e


def served_name(model: str) -> str:
    """The name clients use by default: the hub id itself, or a local directory's name."""
    return model if is_hub_id(model) else os.path.basename(os.path.normpath(model))
