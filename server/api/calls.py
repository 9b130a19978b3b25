"""What every API adapter (gRPC, the OpenAI-compatible door) does the same way per call:
the request id, the caller's timeout and the provider's deadline, the calls in flight
(for a graceful shutdown), and the errors that belong to the door rather than the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from google.rpc import code_pb2

from server.core.limits import MAX_REQUEST_BYTES, MAX_REQUEST_HEADER_KB, MAX_REQUEST_HEADERS
from server.errors import AigcError, retry_info

# Accept a caller's request id only if it is safe to echo into headers and logs.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# How much earlier than the caller's deadline the provider gives up (see provider_deadline).
_DEADLINE_MARGIN_MIN = 0.05
_DEADLINE_MARGIN_MAX = 0.25

# A caller's timeout over HTTP, in seconds, for clients that cannot send
# grpc-timeout (Envoy passes request headers on as metadata).
TIMEOUT_HEADER = "x-aigc-timeout"
_MAX_TIMEOUT_HEADER = 24 * 3600.0


class ServerShuttingDown(AigcError):
    code = code_pb2.UNAVAILABLE
    reason = "SHUTTING_DOWN"

    def __init__(self) -> None:
        super().__init__("this server is shutting down; retry (another replica will answer)")

    def extra_details(self):
        return (retry_info(1.0),)


class MalformedRequest(AigcError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "MALFORMED_REQUEST"

    def __init__(self, method: str, why: str = "") -> None:
        super().__init__(why or f"the {method} request is not valid protobuf for its message type")


class RequestTooLarge(AigcError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "REQUEST_TOO_LARGE"

    def __init__(self, size: int | None) -> None:
        shown = f"{size} bytes" if size is not None else "too large"
        super().__init__(
            f"the request is {shown}; at most {MAX_REQUEST_BYTES} are accepted",
            metadata={"limit_bytes": str(MAX_REQUEST_BYTES)},
        )


# Envoy's gRPC-JSON transcoder keeps a REST call's HTTP path in this header
# when it turns the call into gRPC; a gRPC call through Envoy has none. Envoy
# removes x-envoy-* headers that external callers send (use_remote_address),
# and the header counts only from a trusted peer (Envoy; server/access/clients.py).
TRANSCODED_PATH_HEADER = "x-envoy-original-path"


def grpc_surface(metadata: Iterable[tuple[str, Any]], from_trusted_proxy: bool) -> str:
    """ "rest" for a call Envoy transcoded from JSON, else "grpc" - a label, never a permission."""
    if from_trusted_proxy and any(key == TRANSCODED_PATH_HEADER for key, _ in metadata):
        return "rest"
    return "grpc"


class UnknownRoute(AigcError):
    """An HTTP path or method no route serves (Envoy answers the same for the typed API)."""

    code = code_pb2.NOT_FOUND
    reason = "UNKNOWN_ROUTE"

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"no route for {method} {path}")


class MalformedHttpRequest(AigcError):
    """An HTTP request the parser refused; `why` must not quote the request (it may hold a key)."""

    code = code_pb2.INVALID_ARGUMENT
    reason = "MALFORMED_HTTP_REQUEST"


class RequestHeadersTooLarge(AigcError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "REQUEST_HEADERS_TOO_LARGE"

    def __init__(self) -> None:
        kib, count = MAX_REQUEST_HEADER_KB, MAX_REQUEST_HEADERS
        super().__init__(f"Request headers larger than {kib} KiB or more than {count} of them")


def request_id(metadata: Iterable[tuple[str, Any]]) -> str:
    """The caller's (or Envoy's) x-request-id if it is safe to echo, else a new one."""
    for key, value in metadata:
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex


def remaining_seconds(
    transport_remaining: float | None, metadata: Iterable[tuple[str, Any]]
) -> tuple[float | None, str]:
    """Seconds left - the transport's deadline, or the x-aigc-timeout header if sooner -
    and what is wrong with the header ("" if nothing)."""
    for key, value in metadata:
        if key == TIMEOUT_HEADER and isinstance(value, str):
            try:
                seconds = float(value.strip().removesuffix("s"))
            except ValueError:
                seconds = math.nan
            if not (0 < seconds <= _MAX_TIMEOUT_HEADER):
                return transport_remaining, "seconds above 0, at most 86400 (e.g. 30 or 2.5s)"
            if transport_remaining is None or seconds < transport_remaining:
                return seconds, ""
            break
    return transport_remaining, ""


def provider_deadline(remaining: float | None) -> float | None:
    """Loop time by which the provider gives up: the caller's deadline, minus a margin.

    Without the margin the provider's own deadline and gRPC's fire at the
    same instant, and when gRPC wins the caller gets a bare
    DEADLINE_EXCEEDED - no ErrorInfo, no request id. Giving up a little
    earlier lets us answer with the full status (and close the upstream).
    """
    if remaining is None:
        return None
    margin = min(_DEADLINE_MARGIN_MAX, max(_DEADLINE_MARGIN_MIN, remaining * 0.02))
    return asyncio.get_running_loop().time() + max(0.001, remaining - margin)


class InFlight:
    """The calls an adapter is serving, for a graceful shutdown.

    `drained()` returns once none is left; `interrupt_all()`, when the
    shutdown grace is over, cancels each call's task with `shutting_down`
    set, so the call - seeing it was us - answers SHUTTING_DOWN (a stream in
    its last message) instead of vanishing mid-stream.
    """

    def __init__(self) -> None:
        self._calls: set[Any] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._calls)

    @contextlib.contextmanager
    def track(self, call: Any) -> Iterator[None]:
        """`call` has `task` (its asyncio task) and `shutting_down` (set by interrupt_all)."""
        self._calls.add(call)
        self._idle.clear()
        try:
            yield
        finally:
            self._calls.discard(call)
            if not self._calls:
                self._idle.set()

    async def drained(self) -> None:
        await self._idle.wait()

    def interrupt_all(self) -> int:
        for call in list(self._calls):
            call.shutting_down = True
            if call.task is not None:
                call.task.cancel()
        return len(self._calls)


def shutdown_error(call: Any, error: BaseException) -> AigcError:
    """The error to end a call with, for an exception from the engine (or our own cancel)."""
    if isinstance(error, AigcError):
        return error
    if isinstance(error, asyncio.CancelledError) and call.shutting_down and call.task is not None:
        call.task.uncancel()
        return ServerShuttingDown()
    raise error


__all__ = [
    "TIMEOUT_HEADER",
    "TRANSCODED_PATH_HEADER",
    "InFlight",
    "MalformedHttpRequest",
    "MalformedRequest",
    "RequestHeadersTooLarge",
    "RequestTooLarge",
    "ServerShuttingDown",
    "UnknownRoute",
    "grpc_surface",
    "provider_deadline",
    "remaining_seconds",
    "request_id",
    "shutdown_error",
]
