"""The INTERNAL row of the error table: a bug in our code (here: a provider
that raises something other than UpstreamError) reaches the caller as
INTERNAL with the request id, the traceback goes to the log, and the service
keeps serving. The provider implements the real interface; the server is the
real grpc.aio server on a real socket."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from server.app import create_server
from server.providers.base import Chunk, Provider, ProviderRequest, Usage
from server.routing import ModelRoute, Router
from tests.support import status


class BuggyProvider(Provider):
    """Answers "ok" normally; the prompt "crash" hits a bug before or mid-stream."""

    name = "buggy"

    @contextlib.asynccontextmanager
    async def stream(self, request: ProviderRequest) -> AsyncIterator[AsyncIterator[Chunk]]:
        assert request.chat is not None
        text = request.chat.messages[-1].content
        if text == "crash":
            raise KeyError("a bug before the first chunk")
        yield self._chunks(text)

    async def _chunks(self, text: str) -> AsyncIterator[Chunk]:
        yield Chunk(parts=[content_pb2.Part(text="ok")], response_id="r1")
        if text == "crash later":
            raise ZeroDivisionError("a bug mid-stream")
        yield Chunk(
            finish=generation_pb2.FINISH_REASON_STOP,
            usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
        )


@pytest.fixture(scope="module")
async def stub() -> AsyncIterator[aigc_service_pb2_grpc.AigcServiceStub]:
    router = Router([ModelRoute(id="buggy", provider=BuggyProvider(), upstream_model="buggy")], "buggy")
    server, port, _ = create_server(router, "127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield aigc_service_pb2_grpc.AigcServiceStub(channel)
    await server.stop(0)


def request(text: str) -> pb.ChatRequest:
    return pb.ChatRequest(messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content=text)])


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo, which must be the only detail: an INTERNAL error says no more."""
    assert len(status.status_details(error).status.details) == 1
    return status.error_info(error)


async def test_bug_in_unary_is_internal_with_request_id(stub, caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(request("crash"), metadata=(("x-request-id", "bug-1"),))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    info = error_info(caught.value)
    assert (info.reason, info.domain, info.metadata["request_id"]) == ("INTERNAL", "aigc-service", "bug-1")
    # The caller is told where to look, not shown our internals.
    assert "bug-1" in caught.value.details() and "KeyError" not in caught.value.details()
    assert any("bug-1" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_bug_mid_stream_ends_in_band_then_internal(stub):
    messages = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in stub.StreamChat(request("crash later")):
            messages.append(message)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert [[p.text for p in m.message.parts] for m in messages[:-1]] == [["ok"]]
    last = messages[-1]
    assert last.finish_reason == generation_pb2.FINISH_REASON_ERROR
    assert last.error.code == grpc.StatusCode.INTERNAL.value[0]


async def test_service_keeps_serving_after_a_bug(stub):
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Chat(request("crash"))
    response = await stub.Chat(request("fine"))
    assert [p.text for p in response.message.parts] == ["ok"]
    assert response.usage.total_tokens == 2
