"""Worker choice: round-robin, random, direct (by the caller) and KV-aware."""

from __future__ import annotations

from typing import Any

from shared.routing.base import RandomRouter, RoundRobinRouter, RouteDecision, Router


def make_router(mode: str, **kw: Any) -> Router:
    """round-robin | random | kv (the frontend handles direct itself)."""
    if mode == "round-robin":
        return RoundRobinRouter()
    if mode == "random":
        return RandomRouter()
    if mode == "kv":
        from shared.routing.feed import make_kv_router

        return make_kv_router(**kw)
    raise ValueError(f"unknown router mode {mode!r}")


__all__ = ["RandomRouter", "RoundRobinRouter", "RouteDecision", "Router", "make_router"]
