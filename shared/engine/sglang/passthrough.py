"""What the worker's command line hands SGLang: its own flags unchanged, plus the few it shares with shoal's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.engine.sglang.embedding import EMBEDDING_FLAG, is_embedding

# flags SGLang has too: what the user gave reaches it
SHARED_FLAGS = ("--page-size", "--context-length", "--device", "--tool-call-parser", "--reasoning-parser")


def sglang_argv(extra: list[str], argv: list[str], shared: Mapping[str, Any], embedding: bool,
                disaggregation_mode: str) -> tuple[list[str], bool]:
    """SGLang's argv and whether it serves embeddings (`--is-embedding` given, or shoal's `--embedding`).

    `shared` holds the values of SHARED_FLAGS by field name; only those the user gave reach SGLang.
    Raises SglangArgsError on flags SGLang cannot parse."""
    out = list(extra)
    own_embedding = is_embedding(extra)
    if embedding and not own_embedding:
        out.append(EMBEDDING_FLAG)
    if disaggregation_mode != "null":
        out += ["--disaggregation-mode", disaggregation_mode]
    for flag in SHARED_FLAGS:
        if any(a == flag or a.startswith(flag + "=") for a in argv) and shared[flag[2:].replace("-", "_")] != "auto":
            out += [flag, str(shared[flag[2:].replace("-", "_")])]
    return out, embedding or own_embedding
