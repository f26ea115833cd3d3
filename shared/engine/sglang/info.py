"""What a running SGLang engine tells the router: its runtime config and its load.

Both are pure functions of what SGLang reports: the resolved server
arguments and scheduler state (`get_internal_state()`, the scheduler's
ready message) for the runtime config, and the per-DP-rank load snapshots
the scheduler publishes every few steps for the load.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

from protocol.discovery import RuntimeConfig
from shared.engine.base import EngineLoad
from shared.engine.sglang.args import SglangConfig


def runtime_config(cfg: SglangConfig, state: Mapping[str, Any], scheduler_info: Mapping[str, Any]) -> RuntimeConfig:
    """The router's view: KV blocks = max_total_num_tokens // page_size, batch limits, DP, bootstrap."""
    page = int(state.get("page_size") or cfg.page_size or 1)
    total_tokens = int(scheduler_info.get("max_total_num_tokens") or state.get("max_total_num_tokens") or 0)
    running = state.get("effective_max_running_requests_per_dp") or state.get("max_running_requests") or 0
    prefill = state.get("max_prefill_tokens") or state.get("chunked_prefill_size") or 0
    prefill_side = cfg.disaggregation_mode == "prefill"
    return RuntimeConfig(
        total_kv_blocks=total_tokens // page,
        page_size=page,
        max_running_requests=int(running),
        max_batched_tokens=int(prefill),
        max_waiting_requests=int(state.get("max_queued_requests") or 0),
        dp_size=int(state.get("dp_size") or cfg.dp_size or 1),
        disaggregation_mode=cfg.disaggregation_mode,
        bootstrap_host=advertised_host(cfg.host) if prefill_side else None,
        bootstrap_port=cfg.bootstrap_port if prefill_side else None,
    )


def advertised_host(host: str) -> str:
    """The address a peer should dial for a server bound to `host` (wildcards become this host's address)."""
    if host not in ("0.0.0.0", "::", "", "*"):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def load_from_snapshots(snapshots: Sequence[Any], page_size: int) -> EngineLoad:
    """Sum of SGLang's per-DP-rank LoadSnapshots (running, waiting, used and total KV tokens)."""
    page = max(page_size, 1)
    return EngineLoad(
        running=sum(int(s.num_running_reqs) for s in snapshots),
        waiting=sum(int(s.num_waiting_reqs) for s in snapshots),
        kv_used_blocks=sum(int(s.num_used_tokens) for s in snapshots) // page,
        kv_total_blocks=sum(int(s.max_total_num_tokens) for s in snapshots) // page,
    )
