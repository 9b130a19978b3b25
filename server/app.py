"""Server assembly: `create_server` for tests and embedding, `serve` for main.

`create_server` binds (port 0 works) and registers everything - the service,
grpc.health.v1 and reflection - in one place; `serve` adds provider start-up,
signal handling and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aigc.v1 import aigc_service_pb2, aigc_service_pb2_grpc
from server.config import Settings
from server.routing import Router, build_router
from server.service import AigcServicer

log = logging.getLogger(__name__)

SERVICE_NAME = aigc_service_pb2.DESCRIPTOR.services_by_name["AigcService"].full_name

_SERVER_OPTIONS = [
    # Keep idle HTTP/2 connections (e.g. from Envoy) healthy across NATs.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # Long conversations are large requests: allow 32 MiB.
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
]


def create_server(router: Router, address: str) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A configured server bound to `address` (port 0 picks a free port), not started."""
    server = grpc.aio.server(options=_SERVER_OPTIONS)
    aigc_service_pb2_grpc.add_AigcServiceServicer_to_server(AigcServicer(router), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind the gRPC server to {address}")
    return server, port, health_servicer


async def serve(settings: Settings) -> None:
    router = build_router(settings)
    for provider in router.providers():
        await provider.start()
    server, port, health_servicer = create_server(router, settings.grpc_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving aigc.v1.AigcService",
            extra={"address": settings.grpc_address, "port": port, "default_model": router.default.id},
        )
        await stop.wait()
        log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace_seconds})
        # NOT_SERVING first, so load balancers stop sending new work while
        # in-flight streams get the grace period to finish.
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.shutdown_grace_seconds)
    finally:
        for provider in router.providers():
            await provider.close()
    log.info("stopped")
