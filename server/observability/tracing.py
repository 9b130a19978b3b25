"""Traces: a SERVER span per RPC and a CLIENT span per upstream call.

Tracing is off unless an OTLP endpoint is configured (the standard
OTEL_EXPORTER_OTLP_ENDPOINT). Off means `NoTracing`: no-op spans and no
import of the OpenTelemetry SDK or exporter at all (server/observability/otel.py
is imported only when tracing is on).

The service talks to `Span` and `Tracing` below and never to OpenTelemetry.
Spans are passed explicitly, never made "current": an RPC's code runs across
`yield`s of a streaming handler, where attaching and detaching a context
would cross task boundaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

AttributeValue = str | bool | int | float | Sequence[str]


class Span:
    """A span that records nothing: the interface, and what runs when tracing is off."""

    trace_id = ""

    def set_attributes(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        pass

    def set_error(self, error_type: str, message: str) -> None:
        """Marks the span failed (status ERROR, `error.type`)."""

    def end(self) -> None:
        pass


class Tracing:
    """Makes spans; this base class is the no-op used when tracing is off."""

    enabled = False

    def server_span(
        self, name: str, metadata: Sequence[Any], attributes: Mapping[str, AttributeValue]
    ) -> Span:
        """A SERVER span, child of the W3C trace context in the gRPC metadata if any."""
        return _NO_SPAN

    def client_span(self, parent: Span, name: str, attributes: Mapping[str, AttributeValue]) -> Span:
        """A CLIENT span for an upstream call under `parent`."""
        return _NO_SPAN

    def shutdown(self) -> None:
        """Flushes and stops exporting."""


NoTracing = Tracing
_NO_SPAN = Span()


def tracing_for(otlp_traces_endpoint: str) -> Tracing:
    if not otlp_traces_endpoint:
        return NoTracing()
    from server.observability.otel import OtelTracing  # only now: the SDK costs imports and a thread

    return OtelTracing()
