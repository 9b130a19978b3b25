"""The OpenTelemetry implementation of `tracing.Tracing`; imported only when tracing is on.

The SDK and the OTLP/gRPC exporter configure themselves from the standard
OTEL_* variables (endpoint, headers, OTEL_BSP_* batching, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_PROPAGATORS). The service name defaults to
"aigc-service".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.observability import tracing


class _OtelSpan(tracing.Span):
    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.trace_id = trace.format_trace_id(span.get_span_context().trace_id)

    def set_attributes(self, attributes: Mapping[str, tracing.AttributeValue | None]) -> None:
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def set_error(self, error_type: str, message: str) -> None:
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(Status(StatusCode.ERROR, message))

    def end(self) -> None:
        self.span.end()


class OtelTracing(tracing.Tracing):
    enabled = True

    def __init__(self) -> None:
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "aigc-service"}
        self._provider = TracerProvider(resource=Resource.create(attributes))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("aigc-service")

    def server_span(
        self, name: str, metadata: Sequence[Any], attributes: Mapping[str, tracing.AttributeValue]
    ) -> tracing.Span:
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
        parent = propagate.extract(carrier)
        return _OtelSpan(
            self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        )

    def client_span(
        self, parent: tracing.Span, name: str, attributes: Mapping[str, tracing.AttributeValue]
    ) -> tracing.Span:
        context = trace.set_span_in_context(parent.span) if isinstance(parent, _OtelSpan) else None
        return _OtelSpan(
            self._tracer.start_span(name, context=context, kind=SpanKind.CLIENT, attributes=attributes)
        )

    def shutdown(self) -> None:
        self._provider.shutdown()
