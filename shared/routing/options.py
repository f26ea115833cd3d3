"""How a caller picks workers: the router options shared by the frontend, the processor and the router service."""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.discovery import DEFAULT_PAGE_SIZE
from shared.config.flags import FlagGroup, flag
from shared.routing.base import Router

ROUTER_MODES = ("round-robin", "random", "kv", "direct")


class RouterOptions(msgspec.Struct, frozen=True):
    mode: str = "round-robin"
    overlap_weight: float = 4.0
    temperature: float = 0.0
    kv_events: bool = True
    active_decode_blocks_threshold: float | None = None  # busy past this fraction of its KV blocks
    active_prefill_tokens_threshold: int | None = None  # busy past this many queued prompt tokens
    session_ttl: float = 0.0

    def make(self, **where: Any) -> Router:
        """A router of this mode (`where`: runtime, component, page_size). In direct mode the caller names
        the worker (a request header); a request without one goes round-robin. With a session TTL the
        router keeps each session on its worker (shared.routing.affinity); with a busy threshold set, busy
        workers are skipped first (shared.routing.busy_router), so a session on a busy worker moves on."""
        from shared.routing import make_router
        from shared.routing.affinity import SessionAffinity

        mode = "round-robin" if self.mode == "direct" else self.mode
        kv = {"overlap_weight": self.overlap_weight, "temperature": self.temperature,
              "approximate": not self.kv_events} if mode == "kv" else {}
        router = make_router(mode, **kv, **where)
        if self.session_ttl > 0:
            router = SessionAffinity(router, self.session_ttl)
        if self.active_decode_blocks_threshold is None and self.active_prefill_tokens_threshold is None:
            return router
        from shared.routing.busy import BusyFilter
        from shared.routing.busy_router import BusyRouter

        busy = BusyFilter(where.get("page_size", DEFAULT_PAGE_SIZE), self.active_decode_blocks_threshold,
                          self.active_prefill_tokens_threshold)
        return BusyRouter(router, busy, where.get("runtime"), where.get("component", "backend"))


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
    flag("active_decode_blocks_threshold", "--active-decode-blocks-threshold", metavar="FRACTION",
         help="any mode: a worker using more than this fraction (0-1] of its KV blocks is busy; busy workers are "
              "skipped, and when all are, requests get 503 with Retry-After (default: off)"),
    flag("active_prefill_tokens_threshold", "--active-prefill-tokens-threshold", metavar="TOKENS",
         help="any mode: a worker with more prompt tokens than this waiting for prefill is busy (default: off)"),
    flag("session_ttl", "--router-session-affinity-ttl-secs", metavar="SECS",
         help="> 0: requests naming a session (header x-session-id) stay on the worker the session last used "
              "while it is live and the session was used within SECS; 0: off"),
)
