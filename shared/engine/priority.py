"""The order of an engine's waiting queue under request priorities, as SGLang's --enable-priority-scheduling
has it: larger priorities first (SGLang's default; its --schedule-low-priority-values-first flips it),
first come first served among equals; a request without one counts as 0."""

from __future__ import annotations

from collections import deque
from typing import Protocol, TypeVar

from protocol.messages import EngineRequest


class Queued(Protocol):
    request: EngineRequest


T = TypeVar("T", bound=Queued)


def enqueue(waiting: deque[T], item: T) -> None:
    """Put `item` behind every waiting request of the same or a larger priority."""
    p = item.request.priority or 0
    if not waiting or (waiting[-1].request.priority or 0) >= p:
        waiting.append(item)  # the common case: no priorities, or none larger behind
        return
    waiting.insert(next(i for i, w in enumerate(waiting) if (w.request.priority or 0) < p), item)
