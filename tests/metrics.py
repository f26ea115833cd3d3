"""A service's /metrics (system port), read the way Prometheus reads it."""

from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from shared.cluster.procs import ServiceProc

Samples = dict[tuple[str, frozenset], float]


def samples(proc: ServiceProc) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.system_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(got: Samples, name: str, **labels: str) -> float:
    """One sample by its exact labels; 0 when it was never set (a labelled counter not yet incremented)."""
    return got.get((name, frozenset(labels.items())), 0.0)


def metric(proc: ServiceProc, name: str, **labels: str) -> float:
    return value(samples(proc), name, **labels)


def wait_above(proc: ServiceProc, name: str, floor: float = 0.0, timeout: float = 30.0, **labels: str) -> float:
    """Poll until the sample exceeds `floor` (e.g. a worker's in-flight gauge before it is killed); its value."""
    end = time.monotonic() + timeout
    while (v := metric(proc, name, **labels)) <= floor:
        if time.monotonic() > end:
            raise AssertionError(f"{proc.name}: {name}{labels} stayed at {v} <= {floor} for {timeout}s")
        time.sleep(0.02)
    return v
