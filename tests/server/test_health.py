"""grpc.health.v1 on the real server process: health answers without a key, so
its Watch streams - which never end by themselves - are capped per process
(AIGC_MAX_HEALTH_WATCHES) with a clear RESOURCE_EXHAUSTED, and a freed slot is
taken again; Check is never refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import Settings
from tests.support.processes import ServerProcess, running_server
from tests.support.status import error_info

CAP = 3


@pytest.fixture(scope="module")
def capped() -> Iterator[ServerProcess]:
    with running_server({"AIGC_MAX_HEALTH_WATCHES": str(CAP), "AIGC_WORKERS": "1"}) as server:
        yield server


async def first_status(call) -> int:
    reply = await call.read()
    return reply.status


async def test_watches_over_the_cap_are_resource_exhausted_and_a_freed_slot_is_reused(
    capped: ServerProcess,
):
    async with grpc.aio.insecure_channel(capped.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        # Different service names count alike: each would hold memory too.
        watches = [
            health.Watch(health_pb2.HealthCheckRequest(service=name))
            for name in ("", "aigc.v1.AigcService", "no.such.Service")
        ]
        statuses = [await first_status(call) for call in watches]
        assert statuses == [
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.SERVICE_UNKNOWN,
        ]

        refused = health.Watch(health_pb2.HealthCheckRequest())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused.read()
        error = caught.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "health Watch" in error.details() and str(CAP) in error.details()
        info = error_info(error)
        assert info.reason == "TOO_MANY_HEALTH_WATCHES"
        assert info.domain == "aigc-service"
        assert info.metadata["limit"] == str(CAP) and info.metadata["request_id"]

        # Check is not a stream: never refused by the cap.
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        # A watcher that leaves frees its slot (the server sees the cancel).
        watches.pop().cancel()
        for _ in range(100):
            again = health.Watch(health_pb2.HealthCheckRequest())
            try:
                assert await first_status(again) == health_pb2.HealthCheckResponse.SERVING
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the cancelled watch's slot was never freed")
        for call in (*watches, again):
            call.cancel()
    assert capped.alive()


def test_the_default_cap_is_finite():
    assert Settings.from_env({}).max_health_watches == 100
