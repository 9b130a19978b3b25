"""The gateway's limits, each reproduced against the real Envoy 1.40 binary.

Every test here failed against the config before the limit existed: a body
over 32 MiB answered 429 (the server's RESOURCE_EXHAUSTED, which clients
retry), a text/plain POST was transcoded as JSON, 431 was text/plain, there was
no connection cap (Envoy warned so at startup), and the 1,025th concurrent
stream was refused by Envoy's default circuit breakers. The fake gRPC server
of harness.py stands in for the real one; tests/fuzz/test_hostile_inputs.py
sends the same kind of input through the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from gateway import render
from tests.gateway.harness import (
    CHAT,
    MAX_REQUEST_BYTES,
    SERVER_MAX_METADATA_BYTES,
    SERVICE,
    FakeAigc,
    Gateway,
    Types,
    error_info,
    render_gateway,
    run_envoy,
    serve_fake,
)

JSON = {"content-type": "application/json"}
CHAT_PATHS = ["/v1/chat:generate", "/v1/chat:streamGenerate"]


def _chat_body(size: int) -> bytes:
    """A valid ChatRequest of exactly `size` bytes of JSON."""
    head, tail = b'{"model":"smollm2","messages":[{"role":"ROLE_USER","content":"', b'"}]}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def _assert_status(resp: httpx.Response, http_status: int, code: int, reason: str) -> dict[str, Any]:
    """resp is a google.rpc.Status JSON error with an aigc-service ErrorInfo quoting the request id."""
    assert resp.status_code == http_status, resp.text[:500]
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    info = error_info(body)
    assert (info["reason"], info["domain"]) == (reason, "aigc-service")
    if "x-request-id" in resp.headers:
        assert info["metadata"]["request_id"] == resp.headers["x-request-id"]
    return info


def _still_serving(gw: Gateway) -> None:
    resp = httpx.post(f"{gw.base_url}/v1/chat:generate", json=CHAT, timeout=10)
    assert resp.status_code == 200, resp.text


def _grpc_chat(port: int, types: Types, options: list[tuple[str, Any]] | None = None):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options or [])
    return channel, channel.unary_unary(
        f"/{SERVICE}/Chat",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=types.ChatResponse.FromString,
    )


# --- request body size ------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_100_mb_body_is_413_request_too_large_not_429(
    gateway: Gateway, grpc_server: tuple[FakeAigc, int], framing: str
) -> None:
    fake = grpc_server[0]
    body = _chat_body(100 * 1024 * 1024)
    content: Any = body  # content-length: refused before the body is read
    if framing == "chunked":  # no content-length: the buffer filter counts the bytes that arrive
        content = (body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20))
    before = len(fake.requests)
    resp = httpx.post(f"{gateway.base_url}/v1/chat:generate", content=content, headers=JSON, timeout=60)
    info = _assert_status(resp, 413, 3, "REQUEST_TOO_LARGE")
    assert info["metadata"]["limit_bytes"] == str(MAX_REQUEST_BYTES)
    assert resp.headers["x-request-id"]
    assert len(fake.requests) == before, "an oversized body must not reach the server"
    _still_serving(gateway)


@pytest.mark.parametrize("path", CHAT_PATHS)
def test_body_limit_is_16_mib_exactly(gateway: Gateway, grpc_server: tuple[FakeAigc, int], path: str) -> None:
    fake = grpc_server[0]
    assert MAX_REQUEST_BYTES == render.MAX_REQUEST_BYTES == 16 * 1024 * 1024
    with httpx.Client(base_url=gateway.base_url, timeout=60) as http:
        at_limit = http.post(path, content=_chat_body(MAX_REQUEST_BYTES), headers=JSON)
        assert at_limit.status_code == 200, at_limit.text[:300]
        # It reached the server whole (JSON is larger than its protobuf, so the
        # message is within the server's equal gRPC limit).
        assert len(fake.requests[-1].messages[0].content) > MAX_REQUEST_BYTES - 100
        _assert_status(
            http.post(path, content=_chat_body(MAX_REQUEST_BYTES + 1), headers=JSON),
            413,
            3,
            "REQUEST_TOO_LARGE",
        )


def test_content_length_over_the_limit_is_413_before_the_body_is_sent(gateway: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat:generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n{" % (100 * 1024 * 1024)
        )
        reply = b""  # no more of the body is ever sent; Envoy answers and closes
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["details"][0]["reason"] == "REQUEST_TOO_LARGE"


def test_h2c_json_body_over_the_limit_is_413(gateway: Gateway, tmp_path: Path) -> None:
    """HTTP/2 JSON (no content-length, so the buffer filter counts): 413 too.
    (With a content-length over the limit the 413 comes before the upload ends
    and the stream is then reset - curl 7.88 reports that as error 92.)"""
    curl = shutil.which("curl")
    if not curl:
        pytest.skip("no curl for an HTTP/2 (prior knowledge) JSON request")
    body = tmp_path / "body.json"
    body.write_bytes(_chat_body(MAX_REQUEST_BYTES + 1))
    command = [curl, "-sS", "--http2-prior-knowledge", "-H", "content-type: application/json"]
    command += ["-H", "content-length:", "--data-binary", f"@{body}", "-w", "\n%{http_code} %{http_version}"]
    result = subprocess.run(
        [*command, f"{gateway.base_url}/v1/chat:generate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text, _, status = result.stdout.rpartition("\n")
    assert status == "413 2"
    assert json.loads(text)["details"][0]["reason"] == "REQUEST_TOO_LARGE"


def test_grpc_caller_over_the_limit_is_answered_by_the_server_not_envoy(
    gateway: Gateway, types: Types
) -> None:
    """Envoy does not read gRPC messages (no buffer filter on the gRPC route):
    the server's own limit - the same 16 MiB - answers, and Envoy passes its
    status through. (This fake refuses with grpcio's RESOURCE_EXHAUSTED; the
    real server answers INVALID_ARGUMENT REQUEST_TOO_LARGE, like the 413's
    body: tests/fuzz/test_hostile_inputs.py.)"""
    channel, chat = _grpc_chat(gateway.port, types)
    with channel:
        ok = types.ChatRequest(model="smollm2")
        ok.messages.add(role=2, content="a" * (MAX_REQUEST_BYTES - 100))
        assert ok.ByteSize() <= MAX_REQUEST_BYTES
        assert chat(ok, timeout=30).message.parts[0].text.startswith("echo: aaa")
        over = types.ChatRequest(model="smollm2")
        over.messages.add(role=2, content="a" * MAX_REQUEST_BYTES)
        with pytest.raises(grpc.RpcError) as caught:
            chat(over, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_REQUEST_BYTES) in caught.value.details()


def _server_options() -> dict[str, Any]:
    # Imported here: the rest of tests/gateway runs without the server's code.
    from server import app

    return dict(app._SERVER_OPTIONS)


def test_server_limit_is_the_gateway_limit() -> None:
    """One limit for both doors: a body Envoy lets through is a message the
    server reads, and a gRPC caller meets the same number."""
    from server.core import limits

    assert limits.MAX_REQUEST_BYTES == render.MAX_REQUEST_BYTES
    # grpcio's own cap must not come first (the server answers REQUEST_TOO_LARGE itself).
    assert _server_options()["grpc.max_receive_message_length"] >= render.MAX_REQUEST_BYTES


# --- only JSON (and gRPC) bodies ---------------------------------------------------


@pytest.mark.parametrize("path", CHAT_PATHS)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/grpc-web",
        "application/jsonx",
        None,
    ],
)
def test_post_without_a_json_body_is_415(
    gateway: Gateway, grpc_server: tuple[FakeAigc, int], path: str, content_type: str | None
) -> None:
    """A web page on any other site can send these (a CORS "simple request"
    needs no preflight): they must never become a paid call."""
    fake = grpc_server[0]
    before = len(fake.requests)
    headers = {"content-type": content_type} if content_type else {}
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        resp = http.post(path, content=json.dumps(CHAT).encode(), headers=headers)
    info = _assert_status(resp, 415, 3, "UNSUPPORTED_MEDIA_TYPE")
    assert info["metadata"].get("content_type") == content_type
    assert "access-control-allow-origin" not in resp.headers
    assert len(fake.requests) == before


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"]
)
def test_json_with_parameters_or_any_case_is_accepted(http: httpx.Client, content_type: str) -> None:
    resp = http.post("/v1/chat:generate", content=json.dumps(CHAT), headers={"content-type": content_type})
    assert resp.status_code == 200, resp.text
    assert resp.json()["message"]["parts"][0]["text"] == "echo: hi"


@pytest.mark.parametrize("path", ["/v1/models", "/docs", "/openapi.json"])
@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_get_routes_are_not_affected(http: httpx.Client, path: str, content_type: str | None) -> None:
    resp = http.get(path, headers={"content-type": content_type} if content_type else {})
    assert resp.status_code == 200


def test_no_cors_headers_and_preflight_fails(http: httpx.Client) -> None:
    """Not meant for other origins: a browser's preflight gets no CORS grant,
    so a cross-site page cannot send application/json at all."""
    origin = {"origin": "https://evil.example"}
    asks = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    preflight = http.options("/v1/chat:generate", headers={**origin, **asks})
    assert preflight.status_code == 404
    post = http.post("/v1/chat:generate", json=CHAT, headers=origin)
    for resp in (preflight, post, http.get("/v1/models", headers=origin)):
        assert not [name for name in resp.headers if name.lower().startswith("access-control-")]


# --- request headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-big": "a" * (61 * 1024)}, id="61-KiB-header"),
        pytest.param({f"x-h{i}": "1" for i in range(101)}, id="101-headers"),
    ],
)
def test_oversized_request_headers_are_431_status_json(gateway: Gateway, headers: dict[str, str]) -> None:
    resp = httpx.post(f"{gateway.base_url}/v1/chat:generate", json=CHAT, headers=headers, timeout=10)
    # No request id: the request never parsed, so Envoy made none.
    _assert_status(resp, 431, 3, "REQUEST_HEADERS_TOO_LARGE")
    _still_serving(gateway)


def test_headers_within_the_limits_pass(http: httpx.Client) -> None:
    """...and reach a server that accepts 64 KiB of metadata (the fake does, and
    so must the real one: the next test)."""
    headers = {"x-big": "a" * (50 * 1024), **{f"x-h{i}": "1" for i in range(80)}}
    assert http.post("/v1/chat:generate", json=CHAT, headers=headers).status_code == 200


def test_server_accepts_the_headers_the_gateway_lets_through() -> None:
    """grpc-core's default is 8 KiB (and between 8 and 16 KiB it refuses a random
    share of calls with RESOURCE_EXHAUSTED = HTTP 429, which clients retry)."""
    options = _server_options()
    for name in ("grpc.max_metadata_size", "grpc.absolute_max_metadata_size"):
        assert options.get(name, 8 * 1024) >= SERVER_MAX_METADATA_BYTES, name


def test_grpc_caller_with_oversized_metadata_is_refused_and_envoy_serves_on(
    gateway: Gateway, grpc_server: tuple[FakeAigc, int], types: Types
) -> None:
    """HTTP/2 has no 431: Envoy resets the stream (RST_STREAM, INTERNAL) or, when
    the header block is past what it decodes at all, the connection (GOAWAY,
    UNAVAILABLE). Documented in gateway/README.md."""
    fake = grpc_server[0]
    request = types.ChatRequest(model="smollm2")
    request.messages.add(role=2, content="hi")
    before = len(fake.requests)
    for metadata in [
        [("x-big", "a" * (61 * 1024))],
        [("x-big", "a" * 70_000)],
        [(f"x-h{i}", "1") for i in range(101)],
    ]:
        channel, chat = _grpc_chat(gateway.port, types)
        with channel, pytest.raises(grpc.RpcError) as caught:
            chat(request, timeout=10, metadata=metadata)
        assert caught.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
    assert len(fake.requests) == before
    channel, chat = _grpc_chat(gateway.port, types)
    with channel:
        assert chat(request, timeout=10).message.parts[0].text == "echo: hi"


def test_headers_that_never_finish_are_cut_with_408(gateway: Gateway) -> None:
    """request_headers_timeout (10 s): a slow-header client holds no connection."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(b"POST /v1/chat:generate HTTP/1.1\r\nhost: x\r\n")  # ... and never the rest
        started = time.monotonic()
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert 9 < time.monotonic() - started < 15
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["details"][0]["reason"] == "REQUEST_HEADERS_TIMEOUT"


# --- every other error Envoy makes --------------------------------------------------


@pytest.mark.parametrize(
    "request_line",
    [b"FOO /v1/models HTTP/1.1", b"QUERY /v1/models HTTP/1.1", b"GET /v1/models\x01 HTTP/1.1"],
    ids=["unknown method", "QUERY without content-type", "control character in the URL"],
)
def test_request_envoy_cannot_parse_is_400_malformed_http_request(
    gateway: Gateway, request_line: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request_line + b"\r\nhost: x\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head.lower()
    status = json.loads(body)
    assert status["code"] == 3
    assert error_info(status)["reason"] == "MALFORMED_HTTP_REQUEST"


def test_unary_answer_over_the_limit_is_a_status_not_text(http: httpx.Client) -> None:
    """The catch-all mapper: any other error Envoy makes is still a Status - here
    the transcoder's 500 for a unary answer over max_response_body_size (which the
    real server never sends: it refuses a unary answer past MAX_ANSWER_BYTES itself,
    tests/e2e/test_big_answers_e2e.py; streams are transcoded message by message)."""
    resp = http.post("/v1/chat:generate", json={**CHAT, "model": "huge"})
    info = _assert_status(resp, 500, 2, "GATEWAY_ERROR")
    assert info["metadata"]["details"] == "grpc_json_transcode_failure{response_buffer_size_limit_reached}"


# --- connections and concurrent streams ----------------------------------------------


def test_envoy_starts_without_the_no_connection_limit_warning(gateway: Gateway) -> None:
    assert gateway.log is not None
    log = gateway.log.read_text()
    assert "no configured limit to the number of allowed active downstream connections" not in log
    assert gateway.stats("overload.")  # the resource monitor exists


@pytest.fixture(scope="module")
def small_gateway(
    tmp_path_factory: pytest.TempPathFactory, descriptor_path: Path, grpc_server: tuple[FakeAigc, int]
) -> Iterator[Gateway]:
    """An Envoy rendered with --max-connections 20 (which also sizes its circuit breakers)."""
    tmp = tmp_path_factory.mktemp("small-gateway")
    gw = render_gateway(tmp, descriptor_path, grpc_server[1], extra=["--max-connections=20"])
    with run_envoy(gw, tmp / "envoy.log") as running:
        yield running


def _http_get_on(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
    return sock.recv(65536)


def _overflow(gw: Gateway) -> int:
    return sum(v for k, v in gw.stats("listener.").items() if k.endswith("downstream_global_cx_overflow"))


def test_connections_over_the_cap_are_closed_and_admin_still_answers(small_gateway: Gateway) -> None:
    gw = small_gateway
    with contextlib.ExitStack() as stack:
        address = ("127.0.0.1", gw.port)
        held = [stack.enter_context(socket.create_connection(address, timeout=5)) for _ in range(20)]
        for sock in held:  # each is served, and kept open (keep-alive)
            assert _http_get_on(sock).startswith(b"HTTP/1.1 200")
        before = _overflow(gw)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as extra:
            try:
                reply = _http_get_on(extra)
            except (ConnectionResetError, BrokenPipeError):
                reply = b""
            assert reply == b"", "the 21st connection must be closed unanswered"
        assert _overflow(gw) == before + 1
        # The admin interface (readiness, stats) is not counted.
        assert httpx.get(f"http://127.0.0.1:{gw.admin_port}/ready", timeout=5).status_code == 200
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # a freed slot is usable again
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as again:
                try:
                    if _http_get_on(again).startswith(b"HTTP/1.1 200"):
                        break
                except (ConnectionResetError, BrokenPipeError):
                    pass
            assert time.monotonic() < deadline, "a closed connection did not free its slot"
            time.sleep(0.1)


def test_full_circuit_breaker_is_503_gateway_overloaded(
    small_gateway: Gateway, grpc_server: tuple[FakeAigc, int], types: Types
) -> None:
    """20 held streams fill the breakers of the small gateway: one more is a
    clear, retryable 503 (HTTP) / UNAVAILABLE (gRPC), and the held ones live."""
    fake = grpc_server[0]
    channel = grpc.insecure_channel(f"127.0.0.1:{small_gateway.port}")
    stream = channel.unary_stream(
        f"/{SERVICE}/StreamChat",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=types.ChatResponse.FromString,
    )
    with channel:
        calls = [stream(types.ChatRequest(model="hold"), timeout=30) for _ in range(20)]
        try:
            _wait_for(lambda: fake.held == 20, "20 held streams")
            resp = httpx.post(f"{small_gateway.base_url}/v1/chat:generate", json=CHAT, timeout=10)
            _assert_status(resp, 503, 14, "GATEWAY_OVERLOADED")
            other, chat = _grpc_chat(small_gateway.port, types)
            with other, pytest.raises(grpc.RpcError) as caught:
                chat(types.ChatRequest(model="smollm2"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            fake.release_held()
        assert [len(list(call)) for call in calls] == [3] * 20
    _still_serving(small_gateway)


def _wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


HELD_STREAMS = 1_100


@pytest.fixture
def many_fds() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 3 * HELD_STREAMS
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


async def _sse_stream(port: int, opened: list[int]) -> bytes:
    """One SSE stream over its own HTTP/1.1 connection; the whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened.append(1)
    body = json.dumps({**CHAT, "model": "hold"}).encode()
    writer.write(
        b"POST /v1/chat:streamGenerate HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    try:
        return await reader.read()  # to EOF: `connection: close`
    finally:
        writer.close()


def test_1100_held_sse_streams_pass_connection_cap_and_circuit_breakers(
    many_fds: None, tmp_path: Path, descriptor_path: Path, types: Types
) -> None:
    """Envoy's default breakers (1,024 requests) refused stream 1,025 with 503.
    Own fake and Envoy: started after the fd limit is raised."""
    fake = FakeAigc(types)
    # grpc-core queues at most 1,000 calls the application has not picked up
    # yet (grpc.server.max_pending_requests) and cancels the rest of a burst.
    burst = [("grpc.server.max_pending_requests", 10 * HELD_STREAMS)]
    with serve_fake(fake, options=burst) as port:
        gw = render_gateway(tmp_path, descriptor_path, port)
        with run_envoy(gw, tmp_path / "envoy.log"):

            async def run() -> list[bytes]:
                opened: list[int] = []
                tasks = [asyncio.ensure_future(_sse_stream(gw.port, opened)) for _ in range(HELD_STREAMS)]
                try:
                    deadline = time.monotonic() + 60
                    while fake.held < HELD_STREAMS and not any(t.done() for t in tasks):
                        assert time.monotonic() < deadline, f"only {fake.held} streams reached the server"
                        await asyncio.sleep(0.1)
                    stats = gw.stats("cluster.aigc_grpc.")
                    assert fake.held == HELD_STREAMS, [t.result()[:300] for t in tasks if t.done()][:3]
                    assert stats["cluster.aigc_grpc.upstream_rq_active"] >= HELD_STREAMS
                    assert stats["cluster.aigc_grpc.upstream_rq_pending_overflow"] == 0
                    assert stats["cluster.aigc_grpc.upstream_rq_active_overflow"] == 0
                finally:
                    fake.release_held()
                return await asyncio.wait_for(asyncio.gather(*tasks), 60)

            replies = asyncio.run(run())
    assert all(r.startswith(b"HTTP/1.1 200") and b"FINISH_REASON_STOP" in r for r in replies)
