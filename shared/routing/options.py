"""How a caller picks workers: the router options shared by the frontend, the processor and the router service."""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.discovery import DEFAULT_PAGE_SIZE
from shared.config.flags import FlagGroup, flag
from shared.routing.base import Router
from shared.routing.tiers import DEFAULT_TIER_WEIGHTS, parse_tier_weights, tier_weights_flag

ROUTER_MODES = ("round-robin", "random", "kv", "direct")


class RouterOptions(msgspec.Struct, frozen=True):
    mode: str = "round-robin"
    overlap_weight: float = 4.0
    tier_weights: str = DEFAULT_TIER_WEIGHTS  # a cached block's worth by tier (shared.routing.tiers)
    temperature: float = 0.0
    kv_events: bool = True
    active_decode_blocks_threshold: float | None = None  # busy past this fraction of its KV blocks
    active_prefill_tokens_threshold: int | None = None  # busy past this many queued prompt tokens
    session_ttl: float = 0.0
    session_store: str = "shared"  # shared: JetStream KV, every router; local: this process only
    session_from: str = "header"  # header: x-session-id only; prefix: also the hash of the first messages
    queue_size: int = 0  # all workers busy: up to this many requests wait (shared.routing.admission); 0: 503
    tenant_header: str = ""  # the header naming the tenant (else the API key's hash)
    tenant_weights: str = ""  # name=weight,...: fair shares in the queue (others: 1)
    tenant_rate: float = 0.0  # requests/s per tenant (429 past it); 0: no limit
    priority_reserve: float = 0.0  # fraction of the busy budget kept for priority > 0

    def make(self, **where: Any) -> Router:
        """A router of this mode (`where`: runtime, component, page_size). In direct mode the caller names
        the worker (a request header); a request without one goes round-robin. With a session TTL the
        router keeps each session on its worker (shared.routing.affinity); with a busy threshold set, busy
        workers are skipped first (shared.routing.busy_router), so a session on a busy worker moves on."""
        from shared.routing import make_router
        from shared.routing.affinity import SessionAffinity

        mode = "round-robin" if self.mode == "direct" else self.mode
        kv = {"overlap_weight": self.overlap_weight, "temperature": self.temperature,
              "approximate": not self.kv_events,
              "tier_weights": parse_tier_weights(self.tier_weights)} if mode == "kv" else {}
        router = make_router(mode, **kv, **where)
        shared = self.session_store == "shared" and where.get("runtime") is not None
        if self.session_ttl > 0 and shared:  # one session -> worker map for every router (JetStream KV)
            from shared.routing.session_book import SessionBook
            from shared.routing.shared_affinity import SharedSessionAffinity

            book = SessionBook(where["runtime"], where.get("component", "backend"), self.session_ttl)
            router = SharedSessionAffinity(router, book)
        elif self.session_ttl > 0:
            router = SessionAffinity(router, self.session_ttl)
        if self.active_decode_blocks_threshold is None and self.active_prefill_tokens_threshold is None:
            return router  # nothing is ever busy: no queue either
        from shared.routing.busy import BusyFilter
        from shared.routing.busy_router import BusyRouter

        busy = BusyFilter(where.get("page_size", DEFAULT_PAGE_SIZE), self.active_decode_blocks_threshold,
                          self.active_prefill_tokens_threshold)
        router = BusyRouter(router, busy, where.get("runtime"), where.get("component", "backend"))
        if self.queue_size <= 0 and self.tenant_rate <= 0 and self.priority_reserve <= 0:
            return router
        from shared.routing.admission import AdmissionQueue, parse_weights

        return AdmissionQueue(router, self.queue_size, parse_weights(self.tenant_weights), self.tenant_rate,
                              self.priority_reserve)


ROUTER_FLAGS = FlagGroup(
    "routing", RouterOptions,
    flag("mode", "--router-mode", choices=ROUTER_MODES,
         help="which worker takes a request; kv: the one caching the longest prefix, weighed against its load; "
              "direct: the one a request header names"),
    flag("overlap_weight", "--kv-overlap-score-weight",
         help="kv mode: cost of one uncached prompt block relative to one active block of load"),
    flag("tier_weights", "--kv-tier-weights", metavar="gpu=W,host=W,storage=W", type=tier_weights_flag,
         help="kv mode: what a prompt block cached on a worker's GPU, host memory or storage is worth against "
              "recomputing it (a tier left out: 0; gpu=1,host=0,storage=0 counts GPU blocks only)"),
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
    flag("session_store", "--router-session-affinity-store", choices=("shared", "local"),
         help="shared: the session -> worker map lives in JetStream KV (bucket shoal-sessions), the same for "
              "every frontend, processor and router service; local: each process keeps its own"),
    flag("session_from", "--router-session-affinity-from", choices=("header", "prefix"),
         help="header: only requests with x-session-id have a session; prefix: a chat request without the "
              "header gets one from a hash of its first messages (system prompt and first user turn)"),
    flag("queue_size", "--router-queue-size", metavar="N",
         help="with a busy threshold: when every worker is busy, up to N requests wait (by priority, tenant "
              "fair share, deadline, arrival) instead of a 503 at once; 0: off"),
    flag("tenant_header", "--tenant-header", metavar="NAME",
         help="the request header naming the tenant for fair share and rate limits (default: the API key)"),
    flag("tenant_weights", "--router-tenant-weights", metavar="T=W,...",
         help="fair-share weights of named tenants in the admission queue; any other tenant has weight 1"),
    flag("tenant_rate", "--router-tenant-rate", metavar="PER_S",
         help="each tenant's request rate limit (429 with Retry-After past it); 0: none"),
    flag("priority_reserve", "--router-priority-reserve", metavar="FRACTION",
         help="with --active-decode-blocks-threshold: this fraction of each worker's KV budget admits only "
              "requests with priority > 0 (the others queue), so high-priority requests rarely wait; 0: off"),
)
