"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry.tracing import configure_tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test (tracing set back to none after it)."""
    exporter = InMemorySpanExporter()
    configure_tracing("test", None, exporter=exporter)
    yield exporter
    configure_tracing("test", None)
