"""What a frontend measures per model, published every second for the planner."""

from __future__ import annotations

import msgspec

from protocol.messages import PROTOCOL_VERSION


class ModelStats(msgspec.Struct, frozen=True, omit_defaults=True):
    """One model's engine requests over one window of one frontend.

    `ttft_s` and `itl_s` are samples (at most a fixed number per window), so a reader merges the
    windows of several frontends and takes its own percentiles.
    """

    model: str
    requests: int = 0  # engine requests dispatched
    input_tokens: int = 0  # their prompt tokens
    output_tokens: int = 0  # tokens received in the window
    finished: int = 0  # requests that ended with a finish reason
    failed: int = 0  # requests that ended with an error (not a client that left)
    ttft_s: list[float] = []  # dispatch to the first token, one per request that got one
    itl_s: list[float] = []  # mean gap between tokens, one per finished request with two or more


class FrontendStats(msgspec.Struct, frozen=True, omit_defaults=True):
    frontend_id: str
    window_s: float
    models: list[ModelStats] = []
    ts: float = 0.0
    v: int = PROTOCOL_VERSION
