"""One request id through the whole stack: the HTTP caller, Envoy's JSON
access log, the server's access line and the error body - with the real
server, the real local model and the real Envoy (scripts/run_stack.py)."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support.otlp import Receiver, running_receiver
from tests.support.stack import Stack, running_stack

CHAT = {"messages": [{"role": "ROLE_USER", "content": "Hi"}], "generation_config": {"max_output_tokens": 4}}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    with running_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(receiver) -> Iterator[Stack]:
    _, port = receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    with running_stack(env) as running:
        yield running


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http, timeout=30) as client:
        yield client


def json_lines(stack: Stack) -> list[dict[str, Any]]:
    out = []
    for line in stack.output().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def wait_line(stack: Stack, match, what: str, timeout: float = 20) -> dict[str, Any]:
    """The one JSON line `match` accepts. Envoy flushes its access log every
    10 s by default (`--file-flush-interval-msec`), hence the long wait."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in json_lines(stack) if match(line)]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(found) == 1, f"expected one {what} line, got {found}"
    return found[0]


def envoy_line(stack: Stack, request_id: str) -> dict[str, Any]:
    return wait_line(
        stack, lambda line: "logger" not in line and line.get("request_id") == request_id, "Envoy access"
    )


def server_line(stack: Stack, request_id: str) -> dict[str, Any]:
    return wait_line(
        stack,
        lambda line: line.get("logger") == "aigc.access" and line.get("request_id") == request_id,
        "server access",
    )


def error_info(body: dict[str, Any]) -> dict[str, Any]:
    (info,) = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    return info


def test_callers_request_id_joins_envoy_and_server_lines(http, stack):
    request_id = f"gw-{secrets.token_hex(4)}"
    resp = http.post("/v1/chat:generate", json=CHAT, headers={"x-request-id": request_id})
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == request_id
    usage = resp.json()["usage"]

    envoy = envoy_line(stack, request_id)
    assert (envoy["method"], envoy["path"], envoy["status"], envoy["grpc_status"]) == (
        "POST",
        "/v1/chat:generate",
        200,
        0,
    )
    server = server_line(stack, request_id)
    assert (server["method"], server["code"], server["model"]) == ("Chat", "OK", "smollm2")
    assert server["prompt_tokens"] == usage["prompt_tokens"]
    assert server["completion_tokens"] == usage["completion_tokens"]


def test_envoy_makes_the_id_when_the_caller_sends_none(http, stack):
    resp = http.post("/v1/chat:generate", json=CHAT)
    assert resp.status_code == 200
    request_id = resp.headers["x-request-id"]
    assert UUID.fullmatch(request_id)
    assert envoy_line(stack, request_id)["status"] == 200
    assert server_line(stack, request_id)["code"] == "OK"


@pytest.mark.parametrize("path", ["/v1/chat:generate", "/v1/chat:streamGenerate"])
def test_server_error_has_one_id_in_header_body_and_both_logs(http, stack, path):
    request_id = f"gw-{secrets.token_hex(4)}"
    resp = http.post(path, json={**CHAT, "model": "no-such-model"}, headers={"x-request-id": request_id})
    assert resp.status_code == 404
    body = resp.json()
    assert body["code"] == 5
    info = error_info(body)
    assert info["reason"] == "MODEL_NOT_FOUND"
    assert info["metadata"]["request_id"] == request_id
    assert resp.headers["x-request-id"] == request_id
    # (Envoy's grpc_status for a transcoded error is inferred from the HTTP
    # status - 12 for a 404 - as the transcoder consumed the grpc-status; the
    # server line has the real code.)
    assert envoy_line(stack, request_id)["status"] == 404
    server = server_line(stack, request_id)
    assert (server["code"], server["error_reason"]) == ("NOT_FOUND", "MODEL_NOT_FOUND")


def test_upstream_error_in_a_stream_before_its_first_message(http, stack):
    request_id = f"gw-{secrets.token_hex(4)}"
    body = {**CHAT, "vendor_params": {"dry_sequence_breakers": []}}  # llama.cpp's own 400
    resp = http.post("/v1/chat:streamGenerate", json=body, headers={"x-request-id": request_id})
    assert resp.status_code == 400
    info = error_info(resp.json())
    assert (info["reason"], info["metadata"]["request_id"]) == ("UPSTREAM_INVALID_REQUEST", request_id)
    assert envoy_line(stack, request_id)["status"] == 400
    server = server_line(stack, request_id)
    assert (server["method"], server["code"], server["error_reason"]) == (
        "StreamChat",
        "INVALID_ARGUMENT",
        "UPSTREAM_INVALID_REQUEST",
    )


def test_malformed_json_is_status_json_with_the_id_and_never_reaches_the_server(http, stack):
    request_id = f"gw-{secrets.token_hex(4)}"
    resp = http.post(
        "/v1/chat:generate",
        content=b"{not json",
        headers={"content-type": "application/json", "x-request-id": request_id},
    )
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == 3
    assert error_info(body)["metadata"]["request_id"] == request_id
    envoy = envoy_line(stack, request_id)
    assert envoy["status"] == 400
    assert envoy["details"].startswith("grpc_json_transcode_failure")
    time.sleep(0.3)
    assert not [
        line for line in json_lines(stack) if line.get("logger") and line.get("request_id") == request_id
    ]


def test_traceparent_header_reaches_the_server_span(http, stack, receiver):
    collector, _ = receiver
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    headers = {"traceparent": f"00-{trace_id.hex()}-{span_id.hex()}-01"}
    with http.stream("POST", "/v1/chat:streamGenerate", json=CHAT, headers=headers) as resp:
        assert resp.status_code == 200
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events
    spans = collector.wait_for(trace_id, 2)
    (rpc,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    (upstream,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT]
    assert rpc.parent_span_id == span_id
    assert rpc.name == "aigc.v1.AigcService/StreamChat"
    assert upstream.parent_span_id == rpc.span_id
    server = server_line(stack, resp.headers["x-request-id"])
    assert server["trace_id"] == trace_id.hex()
