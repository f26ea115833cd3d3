"""OpenTelemetry tracing across NATS: `traceparent` in message headers.

    configure_tracing("frontend", "http://127.0.0.1:4318")
    with span("frontend.chat", attributes={"model": name}):
        headers = inject_headers({})            # sent with the NATS request
    ...
    with span("worker.generate", context=extract_context(msg.headers)):
        ...

Without an exporter, `span` makes no span: a received trace context is
passed on unchanged, and inject/extract are a few string operations.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from shared.telemetry.logging import get_logger

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_PATH = "/v1/traces"

log = get_logger("shoal.tracing")
_provider: TracerProvider | None = None
_tracers: dict[str, trace.Tracer] = {}
_exporting = False


def configure_tracing(service: str, otlp_endpoint: str | None = None, exporter: SpanExporter | None = None) -> None:
    """Install a TracerProvider; export over OTLP/HTTP when an endpoint is given or in the environment.

    `exporter` adds one more exporter, sent each span as it ends (tests, console debugging).
    """
    global _provider, _exporting
    endpoint = otlp_endpoint or os.environ.get(ENDPOINT_ENV)
    resource = Resource.create({"service.name": service or "shoal"})
    exporting = bool(endpoint) or exporter is not None
    # No exporter: sample nothing, so spans from tracer() cost little and record nothing.
    provider = TracerProvider(resource=resource, sampler=None if exporting else ParentBased(root=ALWAYS_OFF))
    if endpoint:
        _add_otlp_exporter(provider, endpoint)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    old, _provider, _exporting = _provider, provider, exporting
    _tracers.clear()
    if old is None:
        trace.set_tracer_provider(_CurrentProvider())
    else:
        old.shutdown()
    log.info("tracing_configured", service=service, otlp=bool(endpoint), exporting=exporting)


class _CurrentProvider(trace.TracerProvider):
    """The global provider: follows reconfiguration, since OpenTelemetry allows setting it only once."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        assert _provider is not None
        return _provider.get_tracer(*args, **kwargs)


def shutdown_tracing() -> None:
    """Flush and stop the exporter (also happens at interpreter exit)."""
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str = "shoal") -> trace.Tracer:
    t = _tracers.get(name)
    if t is None:
        t = _tracers[name] = (_provider or trace.get_tracer_provider()).get_tracer(name)
    return t


@contextmanager
def span(name: str, context: Context | None = None, attributes: Mapping[str, Any] | None = None,
         kind: trace.SpanKind = trace.SpanKind.INTERNAL) -> Iterator[trace.Span]:
    """A current span; an exception (not a cancellation) marks it as an error.

    Without an exporter no span is made: the caller's context (if given) becomes
    current, so a received traceparent is passed on unchanged, at ~1 us.
    """
    if not _exporting:
        with _current(context):
            yield trace.get_current_span()
        return
    with tracer().start_as_current_span(name, context=context, kind=kind, attributes=_attrs(attributes),
                                        record_exception=False, set_status_on_exception=False) as s:
        try:
            yield s
        except Exception as e:
            s.record_exception(e)
            s.set_status(Status(StatusCode.ERROR, type(e).__name__))
            raise


@contextmanager
def _current(context: Context | None) -> Iterator[None]:
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """`headers` (or a new dict) with the current span's W3C traceparent; unchanged if there is none."""
    out = headers if headers is not None else {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return out
    out[TRACEPARENT] = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    if ctx.trace_state:
        out[TRACESTATE] = ctx.trace_state.to_header()
    return out


def extract_context(headers: Mapping[str, str] | None) -> Context:
    """A context whose parent is the sender's span; empty (a new trace) when the headers carry none."""
    value = headers.get(TRACEPARENT) if headers else None
    parent = _parse_traceparent(value, headers.get(TRACESTATE) if headers else None) if value else None
    if parent is None:
        return Context()
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def _parse_traceparent(value: str, state: str | None) -> SpanContext | None:
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    ctx = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags),
                      trace_state=_trace_state(state))
    return ctx if ctx.is_valid else None


def _trace_state(header: str | None) -> trace.TraceState | None:
    if not header:
        return None
    return trace.TraceState.from_header([header])


def _attrs(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not attributes:
        return None
    return {k: v for k, v in attributes.items() if isinstance(v, str | bool | int | float)}


def _add_otlp_exporter(provider: TracerProvider, endpoint: str) -> None:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("otlp_exporter_missing", hint="pip install shoal[otlp]")
        return
    url = endpoint.rstrip("/")
    if not url.endswith(TRACES_PATH):
        url += TRACES_PATH
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
