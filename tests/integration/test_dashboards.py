"""Every query on every Grafana dashboard parses as PromQL and names only metrics a running cluster exports.

A cluster with a KV-routing frontend and two workers serves some traffic; then every service's /metrics is
scraped, and each panel's expression (Grafana's `$__rate_interval` read as 1m) is parsed with promql-parser.
Each metric it selects must be one the cluster exports (a histogram as _bucket/_sum/_count, a counter as
_total), and each label it matches on one that metric carries.
"""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from pathlib import Path

import promql_parser
from prometheus_client.parser import text_string_to_metric_families

from shared.cluster.procs import ServiceProc
from tests.integration.test_worker_metrics import complete

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count", "_created"), "counter": ("_total", "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created"), "info": ("_info",)}


def exported(procs: list[ServiceProc]) -> dict[str, set[str]]:
    """Series name -> the label names seen on it, over every service's /metrics."""
    names: dict[str, set[str]] = defaultdict(set)
    for proc in procs:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.system_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            for suffix in SUFFIXES.get(family.type, ("",)):
                names.setdefault(family.name + suffix, set())  # a family with no samples yet is exported too
            for sample in family.samples:
                names[sample.name].update(sample.labels)
    return names


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    found: list[promql_parser.VectorSelector] = []
    promql_parser.walk(promql_parser.parse(expr),
                       lambda node: found.append(node) if isinstance(node, promql_parser.VectorSelector) else None)
    return found


def dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            out += [(path.name, panel["title"], t["expr"]) for t in panel.get("targets", [])]
    return out


def test_every_dashboard_query_parses_and_names_exported_metrics(cluster):
    workers = [cluster.worker("--speedup-ratio", "4", engine="mock") for _ in range(2)]
    frontend = cluster.frontend("--router-mode", "kv")
    cluster.wait_models()
    for i in range(4):
        complete(cluster.url, cluster.model_name, f"a prompt long enough to share a block or two, then {i}", 6)
    names = exported([frontend, *workers])

    queries = dashboard_queries()
    assert len({q[0] for q in queries}) == 3 and len(queries) > 20
    for dashboard, title, expr in queries:
        found = selectors(expr)
        assert found, (dashboard, title, expr)
        for sel in found:
            assert sel.name in names, f"{dashboard} / {title}: {sel.name} is not exported"
            labels = {m.name for m in sel.matchers.matchers}
            assert not names[sel.name] or labels <= names[sel.name], (dashboard, title, sel.name, labels)
