"""Traces of real RPCs, exported by the real server process over OTLP/gRPC to
an in-process receiver that decodes the opentelemetry-proto messages."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from tests.support.otlp import Receiver, attributes, running_receiver
from tests.support.processes import ServerProcess, free_port, running_server


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    with running_receiver() as running:
        yield running


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
        "aigc.code": "OK",
        "aigc.surface": "grpc",
        "aigc.streaming": True,
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
    request.vendor_params.update({"dry_sequence_breakers": []})  # llama.cpp's own 400
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
