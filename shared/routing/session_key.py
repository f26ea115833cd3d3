"""Key-less session affinity (`--router-session-affinity-from prefix`): a conversation's session id is a
hash of its first messages (every system/developer message before the first user message, and that
user message), which every later turn of the conversation repeats unchanged."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

PREFIX_SESSION = "prefix:"


def prefix_session(messages: Sequence[Any] | None, mode: str) -> str | None:
    """The session id of a chat whose client named none (None: mode is not prefix, or no user message yet)."""
    if mode != "prefix" or not messages:
        return None
    first: list[Any] = []
    for m in messages:
        first.append(m)
        if (m.get("role") if isinstance(m, dict) else getattr(m, "role", None)) == "user":
            digest = hashlib.blake2b(msgspec.json.encode(first), digest_size=16).hexdigest()
            return PREFIX_SESSION + digest
    return None
