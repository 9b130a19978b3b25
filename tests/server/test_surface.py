"""Which surface a call came through (issue 13 point 6), as the real stack reports it.

The same ListModels reaches the server four ways: gRPC directly, gRPC through
Envoy, REST through Envoy's transcoder, and the OpenAI door through Envoy. Access
lines, `aigc_requests_total` and the server spans say grpc, grpc, rest and openai; the
door's span is an HTTP span (no `rpc.system: grpc`). Streaming is the adapter's
fact: a door stream is counted in aigc_streams_in_flight under its own surface.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
from collections.abc import Iterator

import grpc
import httpx
import pytest

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc
from tests.proxies.env import isolated_env
from tests.support.otlp import Receiver, attributes, running_receiver
from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Receiver]]:
    with running_receiver() as (collector, port):
        env = isolated_env(
            OPENAI_API_KEY="sk-vendor-never-reached",
            AIGC_DEFAULT_MODEL="gpt-4o-mini",
            AIGC_DATA_DIR=str(tmp_path_factory.mktemp("data")),
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_BSP_SCHEDULE_DELAY="50",
        )
        del env["AIGC_METRICS_ADDRESS"]  # the stack's own port
        with running_stack(env) as stack:
            yield stack, collector


def traceparent() -> tuple[bytes, str]:
    trace_id = secrets.token_bytes(16)
    return trace_id, f"00-{trace_id.hex()}-{secrets.token_bytes(8).hex()}-01"


def access_line(stack: Stack, request_id: str) -> dict:
    for raw in stack.output().splitlines():
        if raw.startswith("{") and '"aigc.access"' in raw:
            line = json.loads(raw)
            if line.get("request_id") == request_id:
                return line
    raise AssertionError(f"no access line for {request_id}")


def grpc_list(address: str, request_id: str, header: str, extra=()) -> None:
    with grpc.insecure_channel(address) as channel:
        aigc_service_pb2_grpc.AigcServiceStub(channel).ListModels(
            pb.ListModelsRequest(),
            metadata=(("x-request-id", request_id), ("traceparent", header), *extra),
            timeout=10,
        )


def test_every_surface_is_named_in_logs_metrics_and_spans(traced):
    stack, collector = traced
    envoy = f"127.0.0.1:{stack.http_port}"
    calls = {}
    for surface, how in (
        ("grpc", "direct"),
        ("grpc", "envoy"),
        ("grpc", "forged"),
        ("rest", "envoy"),
        ("openai", "envoy"),
    ):
        request_id = f"surface-{surface}-{how}-{secrets.token_hex(4)}"
        trace_id, header = traceparent()
        headers = {"x-request-id": request_id, "traceparent": header}
        if surface == "grpc" and how == "direct":
            grpc_list(stack.grpc_address, request_id, header)
        elif surface == "grpc" and how == "envoy":
            grpc_list(envoy, request_id, header)
        elif surface == "grpc":  # a gRPC caller that claims to be a transcoded REST call
            grpc_list(envoy, request_id, header, [("x-envoy-original-path", "/v1/models")])
        elif surface == "rest":
            assert httpx.get(f"http://{envoy}/v1/models", headers=headers, timeout=10).status_code == 200
        else:
            reply = httpx.get(f"http://{envoy}/openai/v1/models", headers=headers, timeout=10)
            assert reply.status_code == 200
        calls[request_id] = (surface, trace_id)
    for request_id, (surface, trace_id) in calls.items():
        assert access_line(stack, request_id)["surface"] == surface, request_id
        (span,) = [s for s in collector.wait_for(trace_id, 1) if s.kind == s.SPAN_KIND_SERVER]
        attrs = attributes(span.attributes)
        assert attrs["aigc.surface"] == surface
        if surface == "openai":
            assert not [name for name in attrs if name.startswith("rpc.")], attrs
            assert attrs["aigc.code"] == "OK"
            assert span.name == "GET /openai/v1/models" and attrs["http.route"] == "/openai/v1/models"
        else:
            assert attrs["rpc.system"] == "grpc" and span.name == "aigc.v1.AigcService/ListModels"
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5) as response:
        page = response.read().decode()
    counted = set(re.findall(r'aigc_requests_total\{[^}]*method="ListModels"[^}]*surface="(\w+)"', page))
    assert counted == {"grpc", "rest", "openai"}
