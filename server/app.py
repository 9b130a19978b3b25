"""Server assembly: `create_server` for tests and embedding, `serve` for main.

`create_server` binds (port 0 works) and registers everything - the service,
grpc.health.v1 and reflection - in one place; `serve` adds provider start-up,
the metrics endpoint and trace exporter, signal handling and graceful shutdown.
`create_server` has no other side effects: each server gets its own metrics
registry, so tests can build many in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aigc.v1 import aigc_service_pb2, aigc_service_pb2_grpc
from server.api.grpc_servicer import AigcServicer
from server.config import Settings
from server.core.engine import Engine
from server.observability import MetricsServer, Observability, ObservabilitySettings, tracing_for
from server.routing import Router, build_router

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


def create_server(
    router: Router,
    address: str,
    observability: Observability | None = None,
    *,
    servicer: AigcServicer | None = None,
    private_address: str = "",
    shared_port: bool = False,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A configured server bound to `address` (port 0 picks a free port), not started.

    `shared_port`: several worker processes bind `address` (SO_REUSEPORT; the
    kernel spreads new connections over them). Off otherwise, so a second
    server on a taken port fails instead of silently sharing it.
    `private_address`: this worker's own address as well, for Envoy, which
    balances requests over the workers' own ports.
    """
    options = [*_SERVER_OPTIONS, ("grpc.so_reuseport", 1 if shared_port else 0)]
    server = grpc.aio.server(options=options)
    servicer = servicer or AigcServicer(Engine(router), observability)
    aigc_service_pb2_grpc.add_AigcServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind the gRPC server to {address}")
    if private_address and not server.add_insecure_port(private_address):
        raise OSError(f"could not bind the gRPC server to {private_address}")
    return server, port, health_servicer


async def serve(settings: Settings, observability_settings: ObservabilitySettings | None = None) -> None:
    obs_settings = observability_settings or ObservabilitySettings.from_env()
    observability = Observability(obs_settings, tracing=tracing_for(obs_settings.otlp_traces_endpoint))
    worker = settings.worker_index
    # Under a supervisor, the supervisor serves every worker's metrics at once
    # (prometheus_client's multiprocess mode, server/supervisor.py).
    metrics_address = None if worker is not None else obs_settings.metrics_address
    metrics_server = _start_metrics(observability, metrics_address)
    router = build_router(settings)
    for provider in router.providers():
        await provider.start()
    servicer = AigcServicer(Engine(router), observability)
    private = f"127.0.0.1:{settings.worker_ports[worker]}" if worker is not None else ""
    server, port, health_servicer = create_server(
        router,
        settings.grpc_address,
        servicer=servicer,
        private_address=private,
        shared_port=worker is not None,
    )
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
            extra={
                "address": settings.grpc_address,
                "port": port,
                "worker_address": private or None,
                "default_model": router.default.id,
                "metrics_port": metrics_server.port if metrics_server else None,
                "tracing": observability.tracing.enabled,
            },
        )
        await stop.wait()
        log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace_seconds})
        # NOT_SERVING first, so load balancers stop sending new work while
        # in-flight streams get the grace period to finish.
        await health_servicer.enter_graceful_shutdown()
        # stop(grace) refuses new RPCs at once and waits for open ones - but
        # health Watch streams never end by themselves, so it would always
        # take the whole grace. Wait for our own RPCs only, then stop at once.
        stopping = asyncio.create_task(server.stop(settings.shutdown_grace_seconds))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(servicer.drained(), settings.shutdown_grace_seconds)
        await server.stop(0)
        await stopping
    finally:
        for provider in router.providers():
            await provider.close()
        if metrics_server is not None:
            metrics_server.close()
        # Flushes the spans still batched, so the last RPCs' traces are not lost.
        await asyncio.to_thread(observability.tracing.shutdown)
    log.info("stopped")


def _start_metrics(observability: Observability, address: str | None) -> MetricsServer | None:
    """The /metrics endpoint, with process and Python runtime metrics added.

    A port that cannot be bound is logged as an ERROR and the server runs on
    without metrics: losing the metrics must not take the API down, and
    Prometheus shows the missing target (`up == 0`).
    """
    if address is None:
        return None
    registry = observability.metrics.registry
    prometheus_client.disable_created_metrics()
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    prometheus_client.GCCollector(registry=registry)
    try:
        return MetricsServer(registry, address)
    except OSError as exc:
        log.error("metrics endpoint not started", extra={"address": address, "error": str(exc)})
        return None
