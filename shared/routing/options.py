"""How a caller picks workers: the router options shared by the frontend, the processor and the router service."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.config.flags import FlagGroup, flag
from shared.routing.base import Router

ROUTER_MODES = ("round-robin", "random", "kv", "direct")


class RouterOptions(msgspec.Struct, frozen=True):
    mode: str = "round-robin"
    overlap_weight: float = 4.0
    temperature: float = 0.0
    kv_events: bool = True
    session_ttl: float = 0.0

    def make(self, **where: Any) -> Router:
        """A router of this mode (`where`: runtime, component, page_size). In direct mode the caller names
        the worker (a request header); a request without one goes round-robin. With a session TTL the
        router keeps each session on its worker (shared.routing.affinity)."""
        from shared.routing import make_router
        from shared.routing.affinity import SessionAffinity

        mode = "round-robin" if self.mode == "direct" else self.mode
        kv = {"overlap_weight": self.overlap_weight, "temperature": self.temperature,
              "approximate": not self.kv_events} if mode == "kv" else {}
        router = make_router(mode, **kv, **where)
        return SessionAffinity(router, self.session_ttl) if self.session_ttl > 0 else router


ROUTER_FLAGS = FlagGroup(
    "routing", RouterOptions,
    flag("mode", "--router-mode", choices=ROUTER_MODES,
         help="which worker takes a request; kv: the one caching the longest prefix, weighed against its load; "
              "direct: the one a request header names"),
    flag("overlap_weight", "--kv-overlap-score-weight",
         help="kv mode: cost of one uncached prompt block relative to one active block of load"),
    flag("temperature", "--router-temperature",
         help="kv mode: 0 picks the cheapest worker; > 0 samples softmax(-cost / temperature)"),
    flag("kv_events", "--no-kv-events",
         help="kv mode without workers' KV events: predict caches from the router's own choices"),
    flag("session_ttl", "--router-session-affinity-ttl-secs", metavar="SECS",
         help="> 0: requests naming a session (header x-session-id) stay on the worker the session last used "
              "while it is live and the session was used within SECS; 0: off"),
)
