"""Traces of real RPCs, exported by the real server process over OTLP/gRPC to
an in-process receiver that decodes the opentelemetry-proto messages."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from tests.support.processes import ServerProcess, free_port, running_server


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace collector that keeps every span it is sent."""

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [span for _, span in self.spans if span.trace_id == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} spans of trace {trace_id.hex()}, got {found}")


def attributes(values) -> dict:
    out = {}
    for kv in values:
        kind = kv.value.WhichOneof("value")
        value = getattr(kv.value, kind)
        if kind == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in value.values]
        out[kv.key] = value
    return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    collector = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, port
    server.stop(None)


@pytest.fixture(scope="module")
def traced(receiver) -> Iterator[tuple[ServerProcess, aigc_service_pb2_grpc.AigcServiceStub]]:
    _, port = receiver
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: export at once, the test waits for it
        "AIGC_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    with running_server(env) as server, grpc.insecure_channel(server.address) as channel:
        yield server, aigc_service_pb2_grpc.AigcServiceStub(channel)


def chat(max_output_tokens: int) -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="Hello!")],
        generation_config=generation_pb2.GenerationConfig(max_output_tokens=max_output_tokens),
    )


def traceparent() -> tuple[bytes, bytes, str]:
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    return trace_id, span_id, f"00-{trace_id.hex()}-{span_id.hex()}-01"


def access_line(server: ServerProcess, request_id: str) -> dict:
    for raw in server.output().splitlines():
        line = json.loads(raw)
        if line.get("logger") == "aigc.access" and line.get("request_id") == request_id:
            return line
    raise AssertionError(f"no access line for {request_id}")


def test_stream_has_server_span_under_the_callers_trace_and_client_span_under_it(receiver, traced):
    collector, _ = receiver
    server, stub = traced
    trace_id, caller_span_id, header = traceparent()
    responses = list(
        stub.StreamChat(chat(8), metadata=(("traceparent", header), ("x-request-id", "trace-1")), timeout=30)
    )
    usage = responses[-1].usage
    # The model may stop before its 8 tokens: compare with what the caller got.
    finish = {
        generation_pb2.FINISH_REASON_STOP: "stop",
        generation_pb2.FINISH_REASON_MAX_TOKENS: "max_tokens",
    }[responses[-1].finish_reason]

    spans = collector.wait_for(trace_id, 2)
    assert len(spans) == 2
    (rpc,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    (upstream,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT]

    assert rpc.name == "aigc.v1.AigcService/StreamChat"
    assert rpc.parent_span_id == caller_span_id
    assert upstream.name == "chat smollm2"
    assert upstream.parent_span_id == rpc.span_id
    # The upstream call lies within the RPC.
    assert rpc.start_time_unix_nano <= upstream.start_time_unix_nano
    assert upstream.end_time_unix_nano <= rpc.end_time_unix_nano

    rpc_attributes = attributes(rpc.attributes)
    assert rpc_attributes == {
        "rpc.system": "grpc",
        "rpc.service": "aigc.v1.AigcService",
        "rpc.method": "StreamChat",
        "rpc.grpc.status_code": 0,
        "aigc.request_id": "trace-1",
        "aigc.cancelled": False,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "smollm2",
        "gen_ai.provider.name": "local",
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.response.id": responses[0].id,
        "gen_ai.response.finish_reasons": [finish],
    }
    assert attributes(upstream.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "local",
        "gen_ai.request.model": "smollm2",
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.response.id": responses[0].id,
        "gen_ai.response.finish_reasons": [finish],
    }
    assert rpc.status.code == trace_pb2.Status.STATUS_CODE_UNSET
    assert upstream.status.code == trace_pb2.Status.STATUS_CODE_UNSET
    # The access line names the trace, so logs and traces join.
    assert access_line(server, "trace-1")["trace_id"] == trace_id.hex()
    resource = next(res for res, span in collector.spans if span.trace_id == trace_id)
    assert resource["service.name"] == "aigc-service"


def test_upstream_failure_marks_the_client_span(receiver, traced):
    collector, _ = receiver
    _, stub = traced
    trace_id, _, header = traceparent()
    request = chat(4)
    request.vendor_params.update({"n_probs": "bad"})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, metadata=(("traceparent", header),), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    spans = collector.wait_for(trace_id, 2)
    (rpc,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    (upstream,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT]
    assert upstream.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert "HTTP 400" in upstream.status.message
    assert attributes(upstream.attributes)["error.type"] == "bad_request"
    # INVALID_ARGUMENT is the caller's doing: not a server-span error (gRPC conventions).
    assert rpc.status.code == trace_pb2.Status.STATUS_CODE_UNSET
    rpc_attributes = attributes(rpc.attributes)
    assert rpc_attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert rpc_attributes["aigc.error.reason"] == "UPSTREAM_INVALID_REQUEST"


def test_without_traceparent_a_new_trace_starts(receiver, traced):
    collector, _ = receiver
    server, stub = traced
    stub.Chat(chat(2), metadata=(("x-request-id", "trace-new"),), timeout=30)
    trace_id = bytes.fromhex(access_line(server, "trace-new")["trace_id"])
    spans = collector.wait_for(trace_id, 2)
    (rpc,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert rpc.parent_span_id == b""
    assert rpc.name == "aigc.v1.AigcService/Chat"
