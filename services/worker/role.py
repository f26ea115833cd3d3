"""The role type: what a worker serves on its endpoint, and what it stops when it stops.

The lifecycle (services/worker/lifecycle.py) serves one `Role`; each module in
roles/ builds one. Both import this module, so neither imports the other's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.worker.args import WorkerConfig
from shared.engine.base import Engine
from shared.runtime.server import Handler
from shared.runtime.service import Service


@dataclass
class Role:
    """What a worker serves on its endpoint, and what it stops when it stops."""

    handler: Handler
    request_type: type
    is_final: Callable[[Any], bool]
    request_id_of: Callable[[Any], str] = lambda r: r.request_id
    stop: Callable[[], Awaitable[None]] | None = None
    canary: Callable[[str], Any] | None = None  # the request a canary health check sends (None: no canaries)


RoleFactory = Callable[[Service, WorkerConfig, Engine], Awaitable[Role]]
