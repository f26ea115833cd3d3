"""Scale from zero: a parked model (no worker live, the planner can start one) and the cold-start call.

The planner keeps one `ParkedModel` per pool it can start, under a lease in the models bucket at
`parked_key(ns, model)` (outside the `{ns}.>` model cards, so nothing routes to it); a frontend
lists the model from it and, for a request while no worker is live, asks the planner on
`cold_start_subject(ns)` (core NATS request/reply) to start one.
"""

from __future__ import annotations

import hashlib

import msgspec

from protocol.discovery import ModelCard
from protocol.subjects import PREFIX

DEFAULT_START_S = 30.0  # expected start time before the planner has measured one


class ParkedModel(msgspec.Struct, frozen=True):
    card: ModelCard  # the last live worker's card: tokenizer, kind, context length
    max_workers: int
    expected_start_s: float = DEFAULT_START_S  # the last measured start (card seen after the start)


class ColdStartRequest(msgspec.Struct, frozen=True):
    model: str


class ColdStartReply(msgspec.Struct, frozen=True):
    model: str
    starting: bool  # a worker is starting (now or already)
    expected_start_s: float = DEFAULT_START_S  # from the first start: how long it takes, in all
    reason: str = ""  # when not starting


def parked_key(ns: str, model: str) -> str:
    return f"parked.{ns}.{hashlib.blake2b(model.encode(), digest_size=8).hexdigest()}"


def parked_filter(ns: str) -> str:
    return f"parked.{ns}.*"


def cold_start_subject(ns: str) -> str:
    return f"{PREFIX}.{ns}.planner.cold_start"
