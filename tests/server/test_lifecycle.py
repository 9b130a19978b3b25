"""What happens around a request: callers that cancel or run out of time,
concurrent callers, and shutdown. The upstream must stop working when the
caller is gone - the most common complaint about LLM gateways."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from server.app import create_server
from server.config import Settings
from server.providers.local import LocalProvider
from server.routing import ModelRoute, Router
from tests.support.content import text_of
from tests.support.processes import running_server

LONG = pb.ChatRequest(
    messages=[
        content_pb2.Message(role=content_pb2.ROLE_USER, content="Write a very long story about dragons.")
    ],
    # ~10+ s of decoding on 2 cores, unless something stops it. Greedy, so it runs
    # to the limit (measured: 1000 of 1000 tokens); sampled, it could end early and
    # a model that never stopped would pass.
    generation_config=generation_pb2.GenerationConfig(max_output_tokens=2000, temperature=0),
)


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[LocalProvider]:
    provider = LocalProvider(Settings.from_env({}).local)
    await provider.start()
    yield provider
    await provider.close()


@pytest.fixture(scope="module")
async def stub(local: LocalProvider) -> AsyncIterator[aigc_service_pb2_grpc.AigcServiceStub]:
    """The real server in this process (so the test can look into llama.cpp),
    on a real socket, with a real aio client."""
    router = Router([ModelRoute(id="smollm2", provider=local, upstream_model="smollm2")], "smollm2")
    server, port, _ = create_server(router, "127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield aigc_service_pb2_grpc.AigcServiceStub(channel)
    await server.stop(0)


async def wait_idle(local: LocalProvider, within: float) -> None:
    """Polls llama.cpp until no slot decodes; fails if that takes longer than `within`."""
    deadline = time.monotonic() + within
    while await local.busy_slots():
        assert time.monotonic() < deadline, "llama.cpp is still generating for a caller that left"
        await asyncio.sleep(0.05)


async def test_cancelled_stream_stops_the_model(stub, local):
    call = stub.StreamChat(LONG)
    received = 0
    async for _ in call:
        received += 1
        if received == 3:
            break
    assert await local.busy_slots() == 1
    call.cancel()
    # 2000 tokens take >10 s; a freed slot within 3 s means generation stopped.
    await wait_idle(local, within=3)


async def test_deadline_is_honoured_and_stops_the_model(stub, local):
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(LONG, timeout=0.8)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    await wait_idle(local, within=3)


async def test_deadline_on_a_stream(stub, local):
    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamChat(LONG, timeout=1.0):
            received += 1
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received > 0
    await wait_idle(local, within=3)


async def test_concurrent_streams_are_decoded_together(stub, local):
    request = pb.ChatRequest(
        messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="Describe a forest.")],
        generation_config=generation_pb2.GenerationConfig(max_output_tokens=60),
    )
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await local.busy_slots())
            await asyncio.sleep(0.02)

    async def one() -> pb.ChatResponse:
        return [m async for m in stub.StreamChat(request)][-1]

    watcher = asyncio.create_task(watch())
    lasts = await asyncio.gather(*(one() for _ in range(4)))
    done.set()
    await watcher
    assert all(last.usage.completion_tokens > 0 for last in lasts)
    assert all(last.finish_reason != generation_pb2.FINISH_REASON_UNSPECIFIED for last in lasts)
    assert peak >= 2, "requests were served one after another, not concurrently"


def test_sigterm_lets_inflight_stream_finish_and_turns_health_not_serving():
    with running_server({"AIGC_SHUTDOWN_GRACE_SECONDS": "60"}) as server:
        channel = grpc.insecure_channel(server.address)
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        request = pb.ChatRequest(
            messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="Describe the moon.")],
            generation_config=generation_pb2.GenerationConfig(max_output_tokens=150, temperature=0),
        )
        stream = stub.StreamChat(request, timeout=60)
        first = next(stream)
        assert text_of(first.message)
        statuses: list[int] = []

        def watch_health() -> None:
            try:
                for reply in health.Watch(health_pb2.HealthCheckRequest(service="aigc.v1.AigcService")):
                    statuses.append(reply.status)
            except grpc.RpcError:
                pass

        watcher = threading.Thread(target=watch_health, daemon=True)
        watcher.start()
        time.sleep(0.2)
        server.proc.send_signal(signal.SIGTERM)
        rest = list(stream)  # must complete despite the shutdown
        assert rest[-1].finish_reason != generation_pb2.FINISH_REASON_UNSPECIFIED
        assert rest[-1].usage.completion_tokens > 1
        # Well inside the 60 s grace: shutdown waits for our RPCs, not for
        # the health Watch stream that stays open.
        assert server.proc.wait(timeout=20) == 0
        watcher.join(timeout=5)
        channel.close()
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
        assert "Traceback" not in server.output()
