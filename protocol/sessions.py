"""Session affinity records in the JetStream KV bucket SESSIONS_BUCKET (shared.routing.shared_affinity)."""

from __future__ import annotations

import msgspec


class SessionRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """The worker a session sticks to; `moves`: how often it moved (its worker left or was busy)."""

    worker: str
    moves: int = 0
