"""Busy workers: per-worker thresholds on KV use and on queued prefill, as Dynamo's router has them.

A worker is busy when

    KV blocks in use      > kv_fraction x its KV blocks     (--active-decode-blocks-threshold)
    prompt tokens queued  > prefill_tokens                  (--active-prefill-tokens-threshold)

Both are estimated from the worker's last `WorkerLoad` report plus what this router sent it
since that report, less what finished since, so a burst between reports (a worker publishes a
few per second) cannot overfill it: a worker just under the threshold takes one more request,
then counts as busy until a report or a finished request shows room again. KV use therefore
passes the threshold by at most one request's blocks. The blocks of this router's unfinished
requests are a floor under the KV estimate (a request still waiting in the worker's queue holds
no KV yet, but will). A worker is judged again whenever one of its numbers changes, so asking
which candidates are free costs a set lookup each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import filterfalse

from protocol.kv_events import WorkerLoad


@dataclass
class _Sent:
    instance_id: str
    blocks: int
    tokens: int
    epoch: int  # the worker's reports seen when it was sent


@dataclass
class _Pending:
    """This router's requests on one worker: unfinished, and the change since the worker's last report."""

    blocks: int = 0  # unfinished requests' blocks
    since_blocks: int = 0  # sent minus finished since the last report (negative: more finished)
    since_tokens: int = 0  # prompt tokens sent since the last report and not finished
    epoch: int = 0  # reports seen


class BusyFilter:
    """Which candidate workers are busy; `None` for a threshold turns that check off."""

    def __init__(self, page_size: int, kv_fraction: float | None = None, prefill_tokens: int | None = None) -> None:
        if kv_fraction is not None and not 0 < kv_fraction <= 1:
            raise ValueError(f"--active-decode-blocks-threshold is a fraction of the KV cache in (0, 1], "
                             f"not {kv_fraction}")
        if prefill_tokens is not None and prefill_tokens < 0:
            raise ValueError(f"--active-prefill-tokens-threshold must be >= 0, not {prefill_tokens}")
        self.page_size = page_size
        self.kv_fraction = kv_fraction
        self.prefill_tokens = prefill_tokens
        self._capacity: dict[str, int] = {}  # KV blocks per worker, from its model card
        self._reported: dict[str, WorkerLoad] = {}
        self._pending: dict[str, _Pending] = {}
        self._sent: dict[str, _Sent] = {}
        self._busy: set[str] = set()  # judged again on every change to a worker, so `free` is a set lookup

    # ---- inputs ---------------------------------------------------------------------------
    def set_capacity(self, instance_id: str, kv_blocks: int) -> None:
        if kv_blocks > 0:
            self._capacity[instance_id] = kv_blocks
            self._judge(instance_id)

    def apply_load(self, load: WorkerLoad) -> None:
        self._reported[load.worker_id] = load
        p = self._pending.setdefault(load.worker_id, _Pending())
        p.since_blocks = p.since_tokens = 0
        p.epoch += 1
        self._judge(load.worker_id)

    def sent(self, request_id: str, instance_id: str, num_tokens: int) -> None:
        blocks = -(-num_tokens // self.page_size)
        p = self._pending.setdefault(instance_id, _Pending())
        self._sent[request_id] = _Sent(instance_id, blocks, num_tokens, p.epoch)
        p.blocks += blocks
        p.since_blocks += blocks
        p.since_tokens += num_tokens
        self._judge(instance_id)

    def finished(self, request_id: str) -> None:
        s = self._sent.pop(request_id, None)
        p = self._pending.get(s.instance_id) if s is not None else None
        if s is None or p is None:
            return
        p.blocks -= s.blocks
        p.since_blocks -= s.blocks  # its KV is free now, whether the last report counted it or not
        if s.epoch == p.epoch:  # still counted as queued prefill since the last report
            p.since_tokens -= s.tokens
        self._judge(s.instance_id)

    def remove(self, instance_id: str) -> None:
        self._capacity.pop(instance_id, None)
        self._reported.pop(instance_id, None)
        self._pending.pop(instance_id, None)
        self._busy.discard(instance_id)

    # ---- estimates ------------------------------------------------------------------------
    def kv_blocks(self, instance_id: str) -> int:
        """KV blocks the worker uses, or will once what this router sent it is running."""
        p = self._pending.get(instance_id) or _Pending()
        rep = self._reported.get(instance_id)
        return max(p.blocks, (rep.kv_used_blocks if rep else 0) + p.since_blocks)

    def queued_prefill(self, instance_id: str) -> int:
        """Prompt tokens waiting for prefill on the worker (reported, plus sent since)."""
        p = self._pending.get(instance_id) or _Pending()
        rep = self._reported.get(instance_id)
        return (rep.prefill_tokens if rep else 0) + p.since_tokens

    def capacity(self, instance_id: str) -> int:
        rep = self._reported.get(instance_id)
        return rep.kv_total_blocks if rep and rep.kv_total_blocks else self._capacity.get(instance_id, 0)

    def busy(self, instance_id: str) -> bool:
        return instance_id in self._busy

    def free(self, candidates: Sequence[str]) -> list[str]:
        busy = self._busy
        return list(filterfalse(busy.__contains__, candidates)) if busy else list(candidates)

    def any_free(self, candidates: Sequence[str]) -> bool:
        """Whether some candidate is not busy (`free` without building the list)."""
        return bool(candidates) and not self._busy.issuperset(candidates)

    def _judge(self, instance_id: str) -> None:
        if self._past_a_threshold(instance_id):
            self._busy.add(instance_id)
        else:
            self._busy.discard(instance_id)

    def _past_a_threshold(self, instance_id: str) -> bool:
        if self.kv_fraction is not None:
            total = self.capacity(instance_id)
            if total and self.kv_blocks(instance_id) > self.kv_fraction * total:
                return True
        return self.prefill_tokens is not None and self.queued_prefill(instance_id) > self.prefill_tokens
