"""Logs (structlog), traces (OpenTelemetry) and metrics (Prometheus) for every service."""

from shared.telemetry.logging import configure_logging, get_logger
from shared.telemetry.metrics import Metrics, counter, gauge, histogram, render_metrics
from shared.telemetry.system_server import SystemServer
from shared.telemetry.tracing import configure_tracing, extract_context, inject_headers, span, tracer

__all__ = [
    "Metrics", "SystemServer", "configure_logging", "configure_tracing", "counter", "extract_context", "gauge",
    "get_logger", "histogram", "inject_headers", "render_metrics", "span", "tracer",
]
