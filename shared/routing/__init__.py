"""Worker choice: round-robin, random, direct (by the caller) and KV-aware."""

from shared.routing.base import RandomRouter, RoundRobinRouter, RouteDecision, Router

__all__ = ["RandomRouter", "RoundRobinRouter", "RouteDecision", "Router"]
