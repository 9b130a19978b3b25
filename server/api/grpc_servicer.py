"""AigcService over gRPC: a thin adapter between grpc.aio and the core engine.

It owns what is gRPC's: request ids from metadata, the caller's deadline,
initial metadata (sent right before the first answer, never earlier - headers
commit Envoy to HTTP 200), rich error statuses in `grpc-status-details-bin`,
and the in-band last message of a stream that fails after it started.
Everything else - validation, routing, the provider call, folding, retries -
is the engine's (server/core/engine.py).

Every RPC runs inside `with call.record:` (server/observability/rpc.py), which
puts the request id on every log line of the RPC and, however the RPC ends -
answer, abort, or the caller going away - writes one access line, updates
the metrics and ends the trace spans.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from aigc.v1 import aigc_service_pb2, aigc_service_pb2_grpc, content_pb2, generation_pb2, model_pb2
from server.core.engine import Call, Engine, new_response_id
from server.errors import AigcError, InvalidRequest
from server.observability import Observability

# Accept a caller's request id only if it is safe to echo into headers and logs.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_DEFAULT_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 1000
# How much earlier than the caller's deadline the provider gives up (see _Rpc.deadline).
_DEADLINE_MARGIN_MIN = 0.05
_DEADLINE_MARGIN_MAX = 0.25
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_to_grpc(status: status_pb2.Status) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """Arguments for `context.abort`: code, message, and the rich status trailer."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return code, status.message, (("grpc-status-details-bin", status.SerializeToString()),)


class _Rpc:
    """Per-RPC state: request id, deadline, timing, and the observability record."""

    def __init__(self, context: grpc.aio.ServicerContext, method: str, observability: Observability) -> None:
        self.context = context
        metadata = context.invocation_metadata() or ()
        self.request_id = _request_id(metadata)
        # Read now, never at the end: context.peer() on an RPC that its
        # deadline cancelled segfaulted the server (grpcio 1.85.1).
        remaining = context.time_remaining()
        self.record = observability.rpc(
            method, self.request_id, peer=context.peer(), time_remaining=remaining, metadata=metadata
        )
        self.call = Call(self.request_id, self.record, _deadline(remaining))
        now = time.time_ns()
        self.create_time = timestamp_pb2.Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000)
        self._headers_sent = False

    async def abort(self, error: AigcError) -> None:
        """Ends the RPC with `error` as a rich google.rpc.Status.

        The request id rides in the trailers too: when no message was sent,
        the error is a trailers-only response, which Envoy turns into the HTTP
        status and headers.
        """
        self.record.failed(error)
        code, message, trailers = status_to_grpc(error.to_status(self.request_id))
        if not self._headers_sent:
            trailers = (*trailers, ("x-request-id", self.request_id))
        await self.context.abort(code, message, trailers)

    async def send_headers(self) -> None:
        """Sends the request id as initial metadata, once, right before the first answer.

        Never earlier: headers commit Envoy to HTTP 200, and a stream that fails
        before its first message must reach HTTP callers as a real 4xx/5xx.
        """
        if not self._headers_sent:
            self._headers_sent = True
            await self.context.send_initial_metadata((("x-request-id", self.request_id),))


class AigcServicer(aigc_service_pb2_grpc.AigcServiceServicer):
    def __init__(self, engine: Engine, observability: Observability | None = None) -> None:
        self._engine = engine
        self._observability = observability or Observability()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def drained(self) -> None:
        """Returns once no AigcService RPC is in flight (used by graceful shutdown)."""
        await self._idle.wait()

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    # --- chat -------------------------------------------------------------------------------------

    async def Chat(self, request, context):  # noqa: N802 - gRPC method names
        rpc = _Rpc(context, "Chat", self._observability)
        with self._in_flight(), rpc.record:
            try:
                answer = await self._engine.generate(request, rpc.call)
            except AigcError as error:
                await rpc.abort(error)
            response = aigc_service_pb2.ChatResponse(
                id=answer.response_id,
                model=answer.model,
                provider=answer.provider,
                create_time=rpc.create_time,
                finish_reason=answer.finish,
                usage=answer.usage,
            )
            response.message.role = content_pb2.ROLE_ASSISTANT
            response.message.parts.extend(answer.parts)
            await rpc.send_headers()
            return response

    async def StreamChat(self, request, context):  # noqa: N802
        async for response in self._stream(request, context, "StreamChat", _chat_delta, _chat_last):
            yield response

    # --- completion -----------------------------------------------------------------------------

    async def Complete(self, request, context):  # noqa: N802
        rpc = _Rpc(context, "Complete", self._observability)
        with self._in_flight(), rpc.record:
            try:
                answer = await self._engine.generate(request, rpc.call)
            except AigcError as error:
                await rpc.abort(error)
            await rpc.send_headers()
            return aigc_service_pb2.CompleteResponse(
                id=answer.response_id,
                model=answer.model,
                provider=answer.provider,
                create_time=rpc.create_time,
                text=answer.text(),
                finish_reason=answer.finish,
                usage=answer.usage,
            )

    async def StreamComplete(self, request, context):  # noqa: N802
        async for response in self._stream(
            request, context, "StreamComplete", _completion_delta, _completion_last
        ):
            yield response

    # --- shared stream path ---------------------------------------------------------------------

    async def _stream(self, request, context, method: str, delta, last) -> AsyncIterator:
        rpc = _Rpc(context, method, self._observability)
        with self._in_flight(), rpc.record:
            sent = False
            head = None
            try:
                # Leaving this block early - the caller cancelled, its
                # deadline passed - closes the upstream stream at once.
                async with self._engine.stream(request, rpc.call) as stream:
                    async for parts in stream:
                        if head is None:
                            head = _Head(stream.response_id or new_response_id(), stream, rpc.create_time)
                        message = delta(head, parts)
                        if message is not None:
                            await rpc.send_headers()
                            sent = True
                            yield message
            except AigcError as error:
                if sent:
                    # Already streaming: HTTP/SSE clients saw a 200 and cannot
                    # read trailers, so the failure goes in-band first.
                    failed = last(head, stream.usage)
                    failed.finish_reason = generation_pb2.FINISH_REASON_ERROR
                    failed.error.CopyFrom(error.to_status(rpc.request_id))
                    yield failed
                await rpc.abort(error)
                return
            if head is None:  # an answer without any part
                head = _Head(stream.response_id or new_response_id(), stream, rpc.create_time)
            final = last(head, stream.usage)
            final.finish_reason = stream.finish
            await rpc.send_headers()
            yield final

    # --- models ---------------------------------------------------------------------------------------

    async def ListModels(self, request, context):  # noqa: N802
        rpc = _Rpc(context, "ListModels", self._observability)
        with self._in_flight(), rpc.record:
            try:
                response = self._list_models(request)
            except AigcError as error:
                await rpc.abort(error)
            await rpc.send_headers()
            return response

    def _list_models(
        self, request: aigc_service_pb2.ListModelsRequest
    ) -> aigc_service_pb2.ListModelsResponse:
        offset = _page_offset(request.page_token)
        if request.page_size < 0:
            raise InvalidRequest({"page_size": "must not be negative"})
        size = min(request.page_size or _DEFAULT_PAGE_SIZE, _MAX_PAGE_SIZE)
        router = self._engine.router
        routes = router.models()
        page = routes[offset : offset + size]
        response = aigc_service_pb2.ListModelsResponse(
            models=[
                model_pb2.Model(
                    id=route.id,
                    provider=route.provider.name,
                    upstream_model=route.upstream_model,
                    aliases=route.aliases,
                    is_default=route is router.default,
                    ready=route.provider.ready(),
                    description=route.description,
                    capabilities=sorted(route.capabilities),
                )
                for route in page
            ]
        )
        if offset + size < len(routes):
            response.next_page_token = base64.urlsafe_b64encode(f"offset:{offset + size}".encode()).decode()
        return response


class _Head:
    """What every message of one stream repeats."""

    __slots__ = ("create_time", "id", "model", "provider")

    def __init__(self, response_id: str, stream, create_time: timestamp_pb2.Timestamp) -> None:
        self.id = response_id
        self.model = stream.model
        self.provider = stream.provider
        self.create_time = create_time


def _chat_delta(head: _Head, parts: list[content_pb2.Part]) -> aigc_service_pb2.ChatResponse:
    response = aigc_service_pb2.ChatResponse(
        id=head.id, model=head.model, provider=head.provider, create_time=head.create_time
    )
    response.message.role = content_pb2.ROLE_ASSISTANT
    response.message.parts.extend(parts)
    return response


def _chat_last(head: _Head | None, usage: generation_pb2.Usage | None) -> aigc_service_pb2.ChatResponse:
    response = aigc_service_pb2.ChatResponse(usage=usage)
    if head is not None:
        response.id, response.model, response.provider = head.id, head.model, head.provider
        response.create_time.CopyFrom(head.create_time)
    return response


def _completion_delta(head: _Head, parts: list[content_pb2.Part]) -> aigc_service_pb2.CompleteResponse | None:
    text = "".join(part.text for part in parts)
    if not text:
        return None
    return aigc_service_pb2.CompleteResponse(
        id=head.id, model=head.model, provider=head.provider, create_time=head.create_time, text=text
    )


def _completion_last(
    head: _Head | None, usage: generation_pb2.Usage | None
) -> aigc_service_pb2.CompleteResponse:
    response = aigc_service_pb2.CompleteResponse(usage=usage)
    if head is not None:
        response.id, response.model, response.provider = head.id, head.model, head.provider
        response.create_time.CopyFrom(head.create_time)
    return response


def _deadline(remaining: float | None) -> float | None:
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


def _request_id(metadata) -> str:
    for key, value in metadata:
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex


def _page_offset(token: str) -> int:
    if not token:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(number)
        if kind != "offset" or offset < 0:
            raise ValueError
        return offset
    except ValueError:
        raise InvalidRequest({"page_token": "is not a token from a previous ListModels call"}) from None


__all__ = ["AigcServicer", "status_to_grpc"]
