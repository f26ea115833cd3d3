"""Prometheus metrics: get-or-create factories and one exposition for the system port.

    REQUESTS = counter("shoal_requests", "Requests served", ["model"])
    REQUESTS.labels(model="tiny").inc()
    body, content_type = render_metrics()

Calling a factory again with the same name returns the same metric (modules
reloaded in tests, two services in one process). When PROMETHEUS_MULTIPROC_DIR
is set (SGLang's scheduler processes write there), the exposition also
collects that directory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

M = TypeVar("M", bound=MetricWrapperBase)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """Metrics on one registry, each created once by name."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self._metrics: dict[str, MetricWrapperBase] = {}
        self._lock = threading.Lock()

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = (), multiprocess_mode: str = "all") -> Gauge:
        return self._get(Gauge, name, doc, labels, multiprocess_mode=multiprocess_mode)

    def histogram(self, name: str, doc: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS) -> Histogram:
        return self._get(Histogram, name, doc, labels, buckets=tuple(buckets))

    def render(self) -> tuple[bytes, str]:
        """The text exposition (body, content type), including the multiprocess directory if set."""
        return generate_latest(_Exposition(self.registry)), CONTENT_TYPE_LATEST

    def _get(self, kind: type[M], name: str, doc: str, labels: Sequence[str], **kw: Any) -> M:
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                metric = kind(name, doc, labelnames=tuple(labels), registry=self.registry, **kw)
                self._metrics[name] = metric
                return metric
        return _check_same(existing, kind, name, labels)


def _check_same(existing: MetricWrapperBase, kind: type[M], name: str, labels: Sequence[str]) -> M:
    if not isinstance(existing, kind):
        raise ValueError(f"metric {name!r} already exists as a {type(existing).__name__}, not a {kind.__name__}")
    if tuple(existing._labelnames) != tuple(labels):
        raise ValueError(f"metric {name!r} already exists with labels {existing._labelnames}, not {tuple(labels)}")
    return existing


class _Exposition:
    """The registry's families, then the multiprocess directory's, each family name once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        seen: set[str] = set()
        for family in self.registry.collect():
            seen.add(family.name)
            yield family
        for family in _multiprocess_families():
            if family.name not in seen:
                yield family


def _multiprocess_families() -> Iterator[Any]:
    path = os.environ.get(MULTIPROC_ENV)
    if not path or not os.path.isdir(path):
        return iter(())
    from prometheus_client.multiprocess import MultiProcessCollector

    collector: Collector = MultiProcessCollector(registry=None, path=path)
    return iter(collector.collect())


DEFAULT = Metrics()


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    return DEFAULT.counter(name, doc, labels)


def gauge(name: str, doc: str, labels: Sequence[str] = (), multiprocess_mode: str = "all") -> Gauge:
    return DEFAULT.gauge(name, doc, labels, multiprocess_mode)


def histogram(name: str, doc: str, labels: Sequence[str] = (),
              buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS) -> Histogram:
    return DEFAULT.histogram(name, doc, labels, buckets)


def render_metrics() -> tuple[bytes, str]:
    return DEFAULT.render()


def observe_many(child: Histogram, value: float, n: int) -> None:
    """`n` observations of `value` on a histogram's labelled child at the cost of one: the same exposition as
    calling `observe(value)` n times (per-token latencies of a batch of tokens, without a call per token)."""
    if n <= 1:
        if n == 1:
            child.observe(value)
        return
    child._sum.inc(value * n)
    for i, bound in enumerate(child._upper_bounds):  # the last bound is +Inf
        if value <= bound:
            child._buckets[i].inc(n)
            return
