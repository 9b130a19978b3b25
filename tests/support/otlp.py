"""An in-process OTLP/gRPC trace collector: what the real server exports its spans to
in tests (AIGC_OTLP_ENDPOINT), decoded with the opentelemetry-proto messages."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent, with its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, trace_pb2.Span]] = []
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, trace_id: bytes, count: int, timeout: float = 15) -> list[trace_pb2.Span]:
        """The spans of `trace_id` once there are `count` of them (exports are batched)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [span for _, span in self.spans if span.trace_id == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} spans of trace {trace_id.hex()}, got {found}")


def attributes(values) -> dict:
    """OTLP KeyValues as a dict (arrays as lists)."""
    out = {}
    for kv in values:
        kind = kv.value.WhichOneof("value")
        value = getattr(kv.value, kind)
        if kind == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in value.values]
        out[kv.key] = value
    return out


@contextlib.contextmanager
def running_receiver() -> Iterator[tuple[Receiver, int]]:
    """A Receiver served on a free loopback port; yields (receiver, port)."""
    collector = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield collector, port
    finally:
        server.stop(None)


__all__ = ["Receiver", "attributes", "running_receiver"]
