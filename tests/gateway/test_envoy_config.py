"""The Envoy gateway config, checked against the real Envoy 1.40 binary.

`envoy --mode validate` catches misspelled fields and a missing descriptor;
the rest starts a real Envoy on free ports in front of a small real
grpc.aio server (tests/gateway/harness.py: a generic handler built from the
descriptor set, so these tests do not need gen/python) and talks to it over
HTTP (httpx) and gRPC. The edge's limits are in test_edge_limits.py.
"""

from __future__ import annotations

import http.server
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.gateway.harness import (
    CHAT,
    RENDER,
    REPO,
    SERVICE,
    STREAM_PIECES,
    STREAM_SLEEP,
    FakeAigc,
    Gateway,
    Types,
    black_hole,
    envoy_binary,
    error_info,
    free_port,
    render_gateway,
    run_envoy,
)
from tests.support.content import text_of

# --- the tests -------------------------------------------------------------------


def test_rendered_config_passes_envoy_validate(tmp_path: Path, descriptor_path: Path) -> None:
    gw = render_gateway(tmp_path, descriptor_path, grpc_port=9000)
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(gw.config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_fails_fast_on_missing_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(RENDER), f"--descriptor={tmp_path / 'nope.binpb'}", f"-o={tmp_path / 'x.yaml'}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "nope.binpb" in result.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_openapi_json_is_served(http: httpx.Client) -> None:
    resp = http.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert "openapi" in resp.json()


def test_docs_page_points_swagger_ui_at_the_spec(http: httpx.Client) -> None:
    resp = http.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "/docs/swagger-ui-bundle.js" in resp.text
    # Started by a script of its own (the page's CSP runs no inline script).
    assert "<script>" not in resp.text and '<script src="/docs/docs.js"' in resp.text
    started = http.get("/docs/docs.js")
    assert started.status_code == 200
    assert started.headers["content-type"].startswith("text/javascript")
    assert '"/openapi.json"' in started.text


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui-standalone-preset.js", "text/javascript"),
    ],
)
def test_swagger_ui_assets_are_served_whole(http: httpx.Client, path: str, content_type: str) -> None:
    resp = http.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(content_type)
    on_disk = REPO / "node_modules" / "swagger-ui-dist" / path.removeprefix("/docs/")
    assert len(resp.content) == on_disk.stat().st_size


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/v1/chat:generate"), ("POST", "/v1/chat:nope"), ("POST", "/docs")],
)
def test_unknown_route_is_404_status_json(http: httpx.Client, method: str, path: str) -> None:
    resp = http.request(method, path, json={} if method == "POST" else None)
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == 5
    assert path in body["message"]
    info = error_info(body)
    assert (info["reason"], info["domain"]) == ("UNKNOWN_ROUTE", "aigc-service")
    assert info["metadata"]["request_id"] == resp.headers["x-request-id"]


def test_list_models_with_known_query_parameter(http: httpx.Client) -> None:
    resp = http.get("/v1/models", params={"page_size": 1})
    assert resp.status_code == 200
    body = resp.json()
    assert body["next_page_token"] == "p2"
    assert body["models"][0] == {
        "id": "smollm2",
        "provider": "local",
        "upstream_model": "SmolLM2-135M",
        "is_default": True,
        "ready": True,
    }


def test_unknown_query_parameter_is_400_status_json(http: httpx.Client) -> None:
    resp = http.get("/v1/models", params={"page_sise": 1})
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == 3
    assert error_info(body)["reason"] == "INVALID_QUERY_PARAMETER"


def test_unary_chat_is_transcoded_with_snake_case(http: httpx.Client) -> None:
    resp = http.post("/v1/chat:generate", json=CHAT)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "id": "resp-1",
        "model": "smollm2",
        "provider": "fake",
        "create_time": "2023-11-14T22:13:20Z",
        "message": {"role": "ROLE_ASSISTANT", "parts": [{"text": "echo: hi"}]},
        "finish_reason": "FINISH_REASON_STOP",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


@pytest.mark.parametrize("body", [b"{not json", b'{"messages": 3}', b'{"messages": [{"role": "ROLE_NOPE"}]}'])
def test_malformed_body_is_400_status_json(http: httpx.Client, body: bytes) -> None:
    resp = http.post("/v1/chat:generate", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/json"
    body_json = resp.json()
    assert body_json["code"] == 3
    assert body_json["message"]
    info = error_info(body_json)
    assert (info["reason"], info["domain"]) == ("MALFORMED_REQUEST_BODY", "aigc-service")


def test_stream_is_sse_and_flushed_per_message(http: httpx.Client) -> None:
    events: list[tuple[float, dict[str, Any]]] = []
    with http.stream("POST", "/v1/chat:streamGenerate", json=CHAT) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append((time.monotonic(), json.loads(line.removeprefix("data: "))))
            else:
                assert line == "", f"unexpected SSE line {line!r}"
    assert [e["message"]["parts"][0]["text"] for _, e in events] == STREAM_PIECES
    assert events[-1][1]["finish_reason"] == "FINISH_REASON_STOP"
    assert "finish_reason" not in events[0][1]
    # Each event arrived when the server sent it, not all at the end.
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(events)]
    assert all(gap > STREAM_SLEEP / 2 for gap in gaps), gaps


@pytest.mark.parametrize("path", ["/v1/chat:generate", "/v1/chat:streamGenerate"])
def test_grpc_error_becomes_http_status_witherror_info(http: httpx.Client, path: str) -> None:
    resp = http.post(path, json={**CHAT, "model": "missing"})
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == 5
    assert body["message"] == "unknown model 'missing'"
    # The server's own ErrorInfo, not the gateway's UNKNOWN_ROUTE.
    assert error_info(body) == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "MODEL_NOT_FOUND",
        "domain": "aigc-service",
        "metadata": {"model": "missing"},
    }


def test_a_hung_server_is_cut_at_the_callers_deadline_504_status_json(
    tmp_path: Path, descriptor_path: Path, types: Types
) -> None:
    """Envoy keeps the caller's deadline itself when the server never answers.

    Against a gRPC server this would race: the server gets the same grpc-timeout and
    its own DEADLINE_EXCEEDED (no details) may come first. The real server answers a
    margin early with its ErrorInfo (tests/e2e/test_errors_e2e.py); a hung one cannot.
    """
    with black_hole() as port:
        gw = render_gateway(tmp_path, descriptor_path, grpc_port=port)
        with run_envoy(gw, tmp_path / "envoy.log") as running:
            started = time.monotonic()
            resp = httpx.post(
                f"{running.base_url}/v1/chat:generate",
                json=CHAT,
                headers={"grpc-timeout": "300m", "x-request-id": "hung-1"},
                timeout=10,
            )
            waited = time.monotonic() - started
            assert resp.status_code == 504, resp.text
            assert resp.headers["content-type"] == "application/json"
            body = resp.json()
            assert body["code"] == 4
            assert error_info(body) == {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "DEADLINE_EXCEEDED",
                "domain": "aigc-service",
                "metadata": {"request_id": "hung-1"},
            }
            assert 0.25 <= waited < 5, f"answered after {waited:.2f} s"
            # A gRPC caller gets the plain status, within its deadline.
            channel, chat = _grpc_chat(running, types)
            with channel, pytest.raises(grpc.RpcError) as caught:
                chat(types.ChatRequest(), timeout=0.5)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _grpc_chat(gateway: Gateway, types: Types) -> tuple[grpc.Channel, grpc.UnaryUnaryMultiCallable]:
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.port}")
    return channel, channel.unary_unary(
        f"/{SERVICE}/Chat",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=types.ChatResponse.FromString,
    )


def test_raw_grpc_passes_through_with_its_deadline(
    gateway: Gateway, types: Types, grpc_server: tuple[FakeAigc, int]
) -> None:
    fake = grpc_server[0]
    request = types.ChatRequest(model="smollm2")
    request.messages.add(role=2, content="over grpc")
    channel, chat = _grpc_chat(gateway, types)
    with channel:
        fake.time_remaining.clear()
        resp = chat(request, timeout=5)
    assert text_of(resp.message) == "echo: over grpc"
    # The caller's deadline reached the server through Envoy.
    (remaining,) = fake.time_remaining
    assert remaining is not None and 0 < remaining <= 5


def test_raw_grpc_error_keeps_code_and_details(gateway: Gateway, types: Types) -> None:
    request = types.ChatRequest(model="missing")
    channel, chat = _grpc_chat(gateway, types)
    with channel, pytest.raises(grpc.RpcError) as caught:
        chat(request, timeout=5)
    err = caught.value
    assert err.code() == grpc.StatusCode.NOT_FOUND
    (details,) = [v for k, v in err.trailing_metadata() if k == "grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "MODEL_NOT_FOUND"


def test_upstream_down_is_503_status_json_and_grpc_unavailable(
    tmp_path: Path, descriptor_path: Path, types: Types
) -> None:
    gw = render_gateway(tmp_path, descriptor_path, grpc_port=free_port())  # nothing listens there
    with run_envoy(gw, tmp_path / "envoy.log") as running:
        resp = httpx.post(f"{running.base_url}/v1/chat:generate", json=CHAT, timeout=10)
        assert resp.status_code == 503
        assert resp.headers["content-type"] == "application/json"
        body = resp.json()
        assert body["code"] == 14
        assert error_info(body)["reason"] == "BACKEND_UNAVAILABLE"
        # A gRPC caller gets a plain gRPC status, not the JSON body.
        channel, chat = _grpc_chat(running, types)
        with channel, pytest.raises(grpc.RpcError) as caught:
            chat(types.ChatRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "BACKEND_UNAVAILABLE" not in caught.value.details()


# --- the OpenAI-compatible door (/openai/v1/, plain HTTP to the server) -----------


class _FakeDoor(http.server.BaseHTTPRequestHandler):
    """Answers like server/api/openai_compat: JSON, or SSE when the body asks to stream."""

    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("content-length") or 0)))

    def _answer(self, body: bytes) -> None:
        self.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if body and json.loads(body).get("stream"):
            payload = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'
            content_type = "text/event-stream"
        else:
            payload, content_type = b'{"object":"chat.completion"}', "application/json"
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def door_gateway(
    tmp_path_factory: pytest.TempPathFactory, descriptor_path: Path, grpc_server: tuple[FakeAigc, int]
) -> Iterator[Gateway]:
    door = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeDoor)
    thread = threading.Thread(target=door.serve_forever, daemon=True)
    thread.start()
    tmp = tmp_path_factory.mktemp("door")
    extra = [f"--openai-upstream=127.0.0.1:{door.server_address[1]}"]
    try:
        with run_envoy(
            render_gateway(tmp, descriptor_path, grpc_server[1], extra=extra), tmp / "envoy.log"
        ) as gw:
            yield gw
    finally:
        door.shutdown()
        thread.join(5)


def test_openai_door_is_served_under_openai_v1_unchanged(door_gateway: Gateway) -> None:
    _FakeDoor.seen.clear()
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=door_gateway.base_url, timeout=10) as http_client:
        resp = http_client.post("/openai/v1/chat/completions", json=body, headers={"x-request-id": "door-1"})
        assert resp.status_code == 200
        assert resp.json() == {"object": "chat.completion"}
        streamed = http_client.post("/openai/v1/chat/completions", json={**body, "stream": True})
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.text.endswith("data: [DONE]\n\n")
        assert http_client.get("/openai/v1/models").status_code == 200
    (method, path, headers, sent), *_ = _FakeDoor.seen
    assert (method, path, json.loads(sent)) == ("POST", "/openai/v1/chat/completions", body)
    assert headers["x-request-id"] == "door-1"
    assert [(m, p) for m, p, _, _ in _FakeDoor.seen[1:]] == [
        ("POST", "/openai/v1/chat/completions"),
        ("GET", "/openai/v1/models"),
    ]


def test_openai_door_has_the_same_edge_limits(door_gateway: Gateway) -> None:
    _FakeDoor.seen.clear()
    with httpx.Client(base_url=door_gateway.base_url, timeout=30) as http_client:
        plain = http_client.post(
            "/openai/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}
        )
        assert plain.status_code == 415
        big = http_client.post(
            "/openai/v1/chat/completions",
            content=b'{"x":"' + b"a" * (16 * 1024 * 1024) + b'"}',
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413
    assert not _FakeDoor.seen


def test_without_a_door_openai_v1_is_503_status_json(http: httpx.Client) -> None:
    resp = http.post("/openai/v1/chat/completions", json={"model": "x", "messages": []})
    assert resp.status_code == 503
    assert error_info(resp.json())["reason"] == "BACKEND_UNAVAILABLE"
