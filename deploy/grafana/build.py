"""shoal's Grafana dashboards as code: `python deploy/grafana/build.py` writes deploy/grafana/dashboards/*.json.

Built with grafana-foundation-sdk (the `dev` extra); the JSON is committed, so Grafana (compose
`--profile metrics`) needs nothing but the files. `--check` exits 1 when a committed file differs from
what this script builds (tests/unit/test_grafana.py runs it). Every query uses only metrics listed in
docs/ARCHITECTURE.md ("Telemetry"); tests/integration/test_dashboards.py checks them against a live
cluster's /metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")  # provisioning/datasources/prometheus.yaml
RATE = "[$__rate_interval]"
QUANTILES = (0.5, 0.9, 0.99)


def rate(metric: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{RATE}))"


def ratio(numerator: str, denominator: str, by: str = "") -> str:
    return f"{rate(numerator, by)} / {rate(denominator, by)}"


def quantiles(histogram: str, by: str = "", where: str = "") -> list[tuple[str, str]]:
    """p50/p90/p99 of a histogram (its _bucket series, `where` its label matchers), each line labelled by `by`."""
    keys = ", ".join(["le", *filter(None, [by])])
    suffix = "".join(f" {{{{{k.strip()}}}}}" for k in by.split(",") if k.strip())
    series = f"{histogram}_bucket{{{where}}}" if where else f"{histogram}_bucket"
    return [(f"histogram_quantile({q}, {rate(series, keys)})", f"p{round(q * 100)}{suffix}") for q in QUANTILES]


def panel(title: str, unit: str, queries: list[tuple[str, str]], width: int = 12, description: str = "") -> Panel:
    p = Panel().title(title).unit(unit).datasource(DATASOURCE).height(8).span(width).min(0)
    if description:
        p = p.description(description)
    for i, (expr, legend) in enumerate(queries):
        p = p.with_target(Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i)))
    return p


def dashboard(uid: str, title: str) -> Dashboard:
    return (Dashboard(title).uid(uid).tags(["shoal"]).refresh("10s").time("now-30m", "now")
            .timezone("browser").editable())


def overview() -> Dashboard:
    return (
        dashboard("shoal-overview", "shoal / overview")
        .with_row(Row("Traffic"))
        .with_panel(panel("Requests/s by outcome", "reqps", [
            (rate("shoal_frontend_request_duration_seconds_count", "outcome"), "{{outcome}}")],
            description="Engine requests the frontend finished: ok, cancelled (client left) or the error code"))
        .with_panel(panel("HTTP responses/s by status", "reqps", [
            (rate("shoal_frontend_requests_total", "status"), "{{status}}")]))
        .with_panel(panel("Refused: 429 and 503/s", "reqps", [
            (rate('shoal_frontend_requests_total{status=~"429|503"}', "status"), "{{status}}")]))
        .with_panel(panel("Migrations and retries/s", "short", [
            (rate("shoal_frontend_migrations_total", "model"), "migrations {{model}}"),
            (rate("shoal_frontend_retries_total", "model"), "retries {{model}}")],
            description="Migrations: streams moved to another worker when theirs was lost; retries: re-sent "
                        "before any worker took them"))
        .with_panel(panel("In flight", "short", [("sum by (instance) (shoal_frontend_inflight_requests)",
                                                  "{{instance}}")], width=24))
        .with_row(Row("Latency"))
        .with_panel(panel("Time to first token", "s", quantiles("shoal_frontend_ttft_seconds")))
        .with_panel(panel("Inter-token latency", "s", quantiles("shoal_frontend_inter_token_latency_seconds",
                                                                  "model")))
        .with_panel(panel("Request duration (ok)", "s",
                          quantiles("shoal_frontend_request_duration_seconds", "model", 'outcome="ok"')))
        .with_panel(panel("Worker queue wait", "s", quantiles("shoal_worker_queue_wait_seconds")))
        .with_row(Row("Tokens"))
        .with_panel(panel("Tokens/s", "short", [
            (rate("shoal_worker_tokens_total", "kind"), "{{kind}}")],
            description="prompt, cached (prompt tokens found in the KV cache) and output tokens, all workers"))
        .with_panel(panel("Mean input and output length", "short", [
            (ratio("shoal_frontend_input_sequence_tokens_sum", "shoal_frontend_input_sequence_tokens_count",
                   "model"), "input {{model}}"),
            (ratio("shoal_frontend_output_sequence_tokens_sum", "shoal_frontend_output_sequence_tokens_count",
                   "model"), "output {{model}}")]))
    )


def workers() -> Dashboard:
    by = "instance, component"
    return (
        dashboard("shoal-workers", "shoal / workers")
        .with_row(Row("Cache"))
        .with_panel(panel("KV cache use", "percentunit", [
            (f'sum by ({by}) (shoal_worker_load{{kind="kv_used_blocks"}}) / '
             f'sum by ({by}) (shoal_worker_load{{kind="kv_total_blocks"}})', "{{instance}} {{component}}")]))
        .with_panel(panel("Prefix-cache hit ratio (tokens)", "percentunit", [
            (ratio('shoal_worker_tokens_total{kind="cached"}', 'shoal_worker_tokens_total{kind="prompt"}', by),
             "{{instance}} {{component}}")]))
        .with_panel(panel("Prefix-cache hit ratio per request, median", "percentunit", [
            (f"histogram_quantile(0.5, {rate('shoal_worker_prefix_cache_hit_ratio_bucket', 'le, ' + by)})",
             "{{instance}} {{component}}")]))
        .with_panel(panel("Queue wait p90", "s", [
            (f"histogram_quantile(0.9, {rate('shoal_worker_queue_wait_seconds_bucket', 'le, ' + by)})",
             "{{instance}} {{component}}")]))
        .with_row(Row("Load"))
        .with_panel(panel("Running and waiting", "short", [
            ('shoal_worker_load{kind=~"running|waiting"}', "{{instance}} {{component}} {{kind}}")]))
        .with_panel(panel("In flight per endpoint", "short", [
            ("shoal_endpoint_inflight_requests", "{{instance}} {{component}}.{{endpoint}}")]))
        .with_panel(panel("Requests/s by outcome", "reqps", [
            (rate("shoal_endpoint_requests_total", "instance, component, outcome"),
             "{{instance}} {{component}} {{outcome}}")]))
        .with_panel(panel("Output tokens/s", "short", [
            (rate('shoal_worker_tokens_total{kind="output"}', by), "{{instance}} {{component}}")]))
    )


def routing() -> Dashboard:
    return (
        dashboard("shoal-routing", "shoal / routing")
        .with_row(Row("KV-aware router"))
        .with_panel(panel("Router decisions/s", "short", [
            (rate("shoal_router_decisions_total", "instance, mode"), "{{instance}} {{mode}}")]))
        .with_panel(panel("Prompt blocks found cached on the chosen worker", "percentunit", [
            (ratio("shoal_router_hit_blocks_total", "shoal_router_prompt_blocks_total", "instance"),
             "{{instance}}")]))
        .with_panel(panel("Blocks routed/s", "short", [
            (rate("shoal_router_hit_blocks_total", "instance"), "hit {{instance}}"),
            (rate("shoal_router_prompt_blocks_total", "instance"), "prompt {{instance}}")]))
        .with_panel(panel("Decision time", "s", quantiles("shoal_router_decision_seconds", "instance")))
        .with_panel(panel("KV event batches/s", "short", [
            (rate("shoal_router_kv_batches_total", "instance, result"), "{{instance}} {{result}}")]))
        .with_row(Row("Prefill and decode"))
        .with_panel(panel("Running and waiting by component", "short", [
            ('sum by (component, kind) (shoal_worker_load{kind=~"running|waiting"})', "{{component}} {{kind}}")],
            description="In disaggregated serving the prefill and decode components side by side"))
        .with_panel(panel("Requests/s by component", "reqps", [
            (rate("shoal_endpoint_requests_total", "component, endpoint"), "{{component}}.{{endpoint}}")]))
        .with_panel(panel("KV cache use by component", "percentunit", [
            ('sum by (component) (shoal_worker_load{kind="kv_used_blocks"}) / '
             'sum by (component) (shoal_worker_load{kind="kv_total_blocks"})', "{{component}}")]))
    )


DASHBOARDS = {"overview": overview, "workers": workers, "routing": routing}


def render() -> dict[str, str]:
    """File name -> JSON text, for every dashboard: panels numbered 1.., unset (null) fields left out."""
    out = {}
    for name, build in DASHBOARDS.items():
        doc = _drop_nulls(json.loads(JSONEncoder().encode(build().build())))
        for i, p in enumerate(doc["panels"], 1):
            p["id"] = i
        out[f"{name}.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return out


def _drop_nulls(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        if stale:
            print(f"out of date (run python deploy/grafana/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
