"""Server assembly: `create_server` for tests and embedding, `serve` for main.

`create_server` binds (port 0 works) and registers everything - the service,
grpc.health.v1 and reflection (v1 and v1alpha) - in one place; `serve` adds provider start-up,
the metrics endpoint and trace exporter, signal handling and graceful shutdown.
`create_server` has no other side effects: each server gets its own metrics
registry, so tests can build many in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import signal
from typing import TYPE_CHECKING

import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from aigc.v1 import aigc_service_pb2
from server.access.gate import Gate
from server.access.keys import KeyRing
from server.admin.access import AdminKeys
from server.admin.keys import CallerKeys
from server.admin.servicer import SERVICE_NAME as ADMIN_SERVICE_NAME
from server.admin.servicer import AdminServicer
from server.admin.servicer import register as register_admin
from server.api.calls import request_id
from server.api.grpc_servicer import AigcServicer, register, status_to_grpc
from server.config import AccessSettings, Settings
from server.core.engine import Engine
from server.core.limits import MAX_REQUEST_BYTES
from server.envvars import split_host_port
from server.errors import AigcError
from server.health import CappedHealthServicer
from server.observability import MetricsServer, Observability, ObservabilitySettings, tracing_for
from server.reflection import enable_reflection
from server.routing import Router, build_router
from server.store.settings import StoreSettings

if TYPE_CHECKING:
    from server.store import Store
    from server.store.recorder import CallRecorder

log = logging.getLogger(__name__)

SERVICE_NAME = aigc_service_pb2.DESCRIPTOR.services_by_name["AigcService"].full_name

_SERVER_OPTIONS = [
    # Keep idle HTTP/2 connections (e.g. from Envoy) healthy across NATs.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # grpcio's own cap, twice ours: a message between the two gets our
    # INVALID_ARGUMENT (REQUEST_TOO_LARGE, server/api/grpc_servicer.py);
    # only beyond this does grpcio refuse it itself, with RESOURCE_EXHAUSTED.
    ("grpc.max_receive_message_length", 2 * MAX_REQUEST_BYTES),
    # Request headers (metadata): as much as Envoy passes (60 KiB,
    # gateway/envoy.yaml), so a request Envoy accepted is not refused here
    # with grpc-core's RESOURCE_EXHAUSTED (its default soft limit is 8 KiB).
    ("grpc.max_metadata_size", 64 * 1024),
    ("grpc.absolute_max_metadata_size", 64 * 1024),
    # Answers are small messages; compression would cost CPU on every one.
    ("grpc.default_compression_algorithm", 0),
]


def create_server(
    router: Router,
    address: str,
    observability: Observability | None = None,
    *,
    servicer: AigcServicer | None = None,
    admin: AdminServicer | None = None,
    private_address: str = "",
    shared_port: bool = False,
    max_health_watches: int = Settings.max_health_watches,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A configured server bound to `address` (port 0 picks a free port), not started.

    `shared_port`: several worker processes bind `address` (SO_REUSEPORT; the
    kernel spreads new connections over them). Off otherwise, so a second
    server on a taken port fails instead of silently sharing it.
    `private_address`: this worker's own address as well, for Envoy, which
    balances requests over the workers' own ports.
    `max_health_watches`: health Watch streams held at once (server/health.py).
    """
    options = [*_SERVER_OPTIONS, ("grpc.so_reuseport", 1 if shared_port else 0)]
    servicer = servicer or AigcServicer(Engine(router), observability)
    gate = servicer.engine.gate
    # With keys required, reflection too needs one: only health answers without.
    interceptors = (
        [ReflectionGuard(gate, admin.admins if admin is not None else None)] if gate.keys.enabled else []
    )
    server = grpc.aio.server(options=options, interceptors=interceptors)
    register(servicer, server)
    services = [SERVICE_NAME]
    if admin is not None:
        register_admin(admin, server)
        services.append(ADMIN_SERVICE_NAME)
    health_servicer = CappedHealthServicer(max_health_watches)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Reflection v1 and v1alpha (server/reflection.py): v1-only tools find the API too.
    enable_reflection((*services, health.SERVICE_NAME), server)
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
    # Before the providers: a store that cannot be opened stops the start-up.
    store, recorder = await _open_store(settings.store, observability)
    for provider in router.providers():
        await provider.start()
    # Caller keys: the config's (or, with none configured, the generated one
    # for remote callers), plus those created through the admin API (reloaded
    # from the store on every replica) when there is a store.
    keys: KeyRing | CallerKeys = _caller_keys(settings)
    if store is not None:
        keys = CallerKeys(keys, store, refresh_seconds=settings.store.keys_refresh_seconds)
        await keys.start()
    gate = await _gate(settings.access, keys)
    servicer = AigcServicer(Engine(router, gate=gate, prices=settings.prices), observability)
    admin = AdminServicer(settings.admin_keys, keys, store, router)
    private = f"{settings.worker_host}:{settings.worker_ports[worker]}" if worker is not None else ""
    server, port, health_servicer = create_server(
        router,
        settings.grpc_address,
        servicer=servicer,
        admin=admin,
        private_address=private,
        shared_port=worker is not None,
        max_health_watches=settings.max_health_watches,
    )
    # The OpenAI-compatible door: the same engine (gate, limits, routing), another adapter.
    compat = None
    if settings.openai_address:
        from server.api.openai_compat.app import OpenAICompat

        compat = OpenAICompat(servicer.engine, observability)
    adapters = [servicer, *([compat] if compat else [])]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        if compat is not None:
            host, openai_port = split_host_port(settings.openai_address)
            await compat.start(host, openai_port, shared_port=worker is not None)
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
                "openai_address": settings.openai_address or None,
                "tracing": observability.tracing.enabled,
            },
        )
        await stop.wait()
        log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace_seconds})
        # NOT_SERVING first, so load balancers stop sending new work while
        # in-flight streams get the grace period to finish.
        await health_servicer.enter_graceful_shutdown()
        # Behind Envoy with other replicas: keep taking calls until its health
        # checks have seen NOT_SERVING and send new ones elsewhere.
        await asyncio.sleep(settings.drain_seconds)
        # stop(grace) refuses new RPCs at once and waits for open ones - but
        # health Watch streams never end by themselves, so it would always
        # take the whole grace. Wait for our own RPCs only, then stop at once.
        stopping = asyncio.create_task(server.stop(settings.shutdown_grace_seconds + 5))
        if compat is not None:
            await compat.stop_listening()

        async def all_drained() -> None:
            await asyncio.gather(*(adapter.drained() for adapter in adapters))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_drained(), settings.shutdown_grace_seconds)
        if sum(adapter.interrupt_all() for adapter in adapters):
            # The grace is over: what still runs ends with SHUTTING_DOWN, a
            # stream's in its last message - never a silent cut.
            log.warning("grace over: interrupting the calls still running")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_drained(), 5)
        await server.stop(0)
        await stopping
    finally:
        if compat is not None:
            await compat.close()
        for provider in router.providers():
            await provider.close()
        if gate.quotas is not None:  # stops renewing its leases; the drained calls released theirs
            await gate.quotas.close()
        if isinstance(keys, CallerKeys):
            await keys.close()
        if recorder is not None:
            # Every call has finished by now: write their records before leaving.
            await recorder.close(grace_seconds=settings.shutdown_grace_seconds + 5)
        if store is not None:
            await store.close()
        if metrics_server is not None:
            metrics_server.close()
        # Flushes the spans still batched, so the last RPCs' traces are not lost.
        await asyncio.to_thread(observability.tracing.shutdown)
    log.info("stopped")


async def _open_store(
    settings: StoreSettings, observability: Observability
) -> tuple[Store | None, CallRecorder | None]:
    """The store (migrated) and the recorder of every call, unless AIGC_RECORD_CALLS is off.

    A database that is configured but cannot be reached stops the start-up:
    serving on without recording would lose every call's record unseen.
    """
    if not settings.record_calls:
        log.info("call records off (AIGC_RECORD_CALLS=false)")
        return None, None
    from server.store import Store
    from server.store.recorder import CallRecorder

    store = await Store.open(settings)
    recorder = CallRecorder(store, settings, observability.metrics.registry)
    recorder.start()
    observability.recorder = recorder
    return store, recorder


def _caller_keys(settings: Settings) -> KeyRing:
    """The configured key ring; AIGC_AUTH=auto with no keys: the generated key for remote callers."""
    keys = settings.access.keys
    if keys.local_without_key:
        # AIGC_DATA_DIR, read once with the store's settings: the key sits beside the database.
        return _with_generated_key(keys, settings.store.data_dir)
    if not keys.enabled:
        _warn_open_relay(settings)
    return keys


async def _gate(access: AccessSettings, keys: KeyRing | CallerKeys) -> Gate:
    """The gate with its quota store: Redis when configured, else this process's memory."""
    quotas = None
    if keys.enabled and any(not key.limits.unlimited for key in keys.keys):
        if access.redis_url:
            from server.access.redis_quotas import RedisQuotaStore

            quotas = RedisQuotaStore(access.redis_url, on_failure=access.redis_failure)
        else:
            from server.access.memory_quotas import MemoryQuotaStore

            quotas = MemoryQuotaStore()
    if keys.local_without_key:
        rule = "callers on this machine need no API key; every other caller needs the generated key"
    elif keys.enabled:
        rule = "on: every call needs an API key"
    else:
        rule = "off: every caller is served without a key (AIGC_AUTH=off)"
    log.info(
        "authentication %s",
        rule,
        extra={
            "auth": keys.enabled,
            "keys": [key.name for key in keys.keys],
            "quotas": "redis" if access.redis_url and quotas else ("memory" if quotas else None),
        },
    )
    return Gate(keys, quotas, max_in_flight=access.max_concurrent_streams, clients=access.clients)


def _with_generated_key(keys: KeyRing, data_dir: pathlib.Path) -> KeyRing:
    """AIGC_AUTH=auto with no caller keys: the generated key for remote callers, and a loud
    line that says so (its path, never the key: no secrets in logs)."""
    from server.access.caller_key import ensure_caller_key

    try:
        key, path = ensure_caller_key(data_dir)
    except OSError as exc:
        raise SystemExit(
            f"aigc-service: no caller keys are configured and the generated key cannot be kept in "
            f"{str(data_dir)!r} (AIGC_DATA_DIR): {exc}. Set AIGC_DATA_DIR to a writable folder, configure "
            "caller keys ([[keys]] in AIGC_CONFIG, or AIGC_API_KEYS), or set AIGC_AUTH=off"
        ) from None
    log.warning(
        "no caller keys are configured: callers on this machine are served without a key; any other "
        "caller must send `authorization: Bearer <key>` with the key in %s ($AIGC_DATA_DIR/caller-key). "
        "Configure caller keys ([[keys]] in AIGC_CONFIG, or AIGC_API_KEYS) to choose your own, "
        "or set AIGC_AUTH=off to serve everyone without a key",
        path,
        extra={"caller_key_file": str(path)},
    )
    return keys.with_generated_key(key, str(path))


def _warn_open_relay(settings: Settings) -> None:
    """AIGC_AUTH=off: said at every start, naming the vendor keys anyone may now spend."""
    vendors = sorted(name for name, upstream in settings.catalog.upstreams.items() if upstream.api_key)
    if vendors:
        log.warning(
            "AIGC_AUTH=off: this server is an open relay - anyone who can reach it spends the vendor "
            "keys of %s without a key of their own",
            ", ".join(vendors),
            extra={"vendors_with_keys": vendors},
        )
    else:
        log.warning("AIGC_AUTH=off: this server is an open relay - anyone who can reach it is served")


class ReflectionGuard(grpc.aio.ServerInterceptor):
    """With keys required, server reflection needs a key too - except for the health
    service's own descriptor, so `grpcurl ... grpc.health.v1.Health/Check` (which
    asks reflection for it first) works without a key, like health itself. The
    caller's address decides as it does for every RPC (a local caller needs no
    key when none are configured), so the check runs in the handler, where the
    peer is known. An admin key passes too: grpcurl asks reflection before
    every admin call."""

    def __init__(self, gate: Gate, admins: AdminKeys | None = None) -> None:
        self._gate = gate
        self._admins = admins

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/grpc.reflection."):
            return handler
        metadata = tuple(details.invocation_metadata or ())
        if self._admins is not None and self._admins.is_admin(metadata):
            return handler
        reflect = handler.stream_stream
        gate = self._gate

        async def guarded(request_iterator, context):
            try:
                gate.authenticate(metadata, context.peer())
            except AigcError as error:
                refusal = status_to_grpc(error.to_status(request_id(metadata)))
            else:
                async for response in reflect(request_iterator, context):
                    yield response
                return

            async def checked():
                async for request in request_iterator:
                    if not _asks_for_health(request):
                        await context.abort(*refusal)
                    yield request

            async for response in reflect(checked(), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _asks_for_health(request) -> bool:
    """A reflection request for grpc.health.v1's descriptor (what grpcurl asks before a Check)."""
    kind = request.WhichOneof("message_request")
    if kind == "file_containing_symbol":
        return request.file_containing_symbol.startswith(f"{health.SERVICE_NAME.rpartition('.')[0]}.")
    if kind == "file_by_filename":
        return request.file_by_filename == "grpc/health/v1/health.proto"
    return False


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
