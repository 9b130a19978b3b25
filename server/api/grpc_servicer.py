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
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from aigc.v1 import (
    aigc_service_pb2,
    aigc_service_pb2_grpc,
    content_pb2,
    embedding_pb2,
    generation_pb2,
    model_pb2,
)
from server.access.clients import parse_peer
from server.access.keys import CallerKey
from server.api.calls import (
    TIMEOUT_HEADER,
    InFlight,
    MalformedRequest,
    RequestTooLarge,
    grpc_surface,
    provider_deadline,
    remaining_seconds,
    request_id,
    shutdown_error,
)
from server.core.engine import Call, Engine, new_response_id
from server.core.limits import MAX_REQUEST_BYTES
from server.errors import AigcError, InvalidRequest, caller_should_retry, status_facts
from server.observability import Observability

_DEFAULT_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 1000
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_to_grpc(status: status_pb2.Status) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """Arguments for `context.abort`: code, message, and the rich status trailer."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return code, status.message, (("grpc-status-details-bin", status.SerializeToString()),)


class Undecodable:
    """A request whose bytes are not the message they should be, or too many (see `register`)."""

    __slots__ = ("error", "size")

    def __init__(self, error: Exception | None, size: int) -> None:
        self.error = error
        self.size = size


class _Rpc:
    """Per-RPC state: request id, deadline, timing, and the observability record."""

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        observability: Observability,
        engine: Engine,
        *,
        streaming: bool,
    ) -> None:
        self.context = context
        metadata = context.invocation_metadata() or ()
        self.metadata = metadata
        self.request_id = request_id(metadata)
        # Read now, never at the end: context.peer() on an RPC that its
        # deadline cancelled segfaulted the server (grpcio 1.85.1).
        peer = context.peer()
        remaining, self.bad_timeout = remaining_seconds(context.time_remaining(), metadata)
        trusted = engine.gate.clients.trusted(parse_peer(peer))
        surface = grpc_surface(metadata, trusted)
        self.record = observability.rpc(
            method,
            self.request_id,
            streaming=streaming,
            surface=surface,
            peer=peer,
            time_remaining=remaining,
            metadata=metadata,
        )
        self.call = Call(self.request_id, self.record, provider_deadline(remaining))
        self.task = asyncio.current_task()
        self.shutting_down = False
        now = time.time_ns()
        self.create_time = timestamp_pb2.Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000)
        self._headers_sent = False
        # A REST call came through Envoy's transcoder with the id we use (Envoy
        # sets one on every request and, always_set_request_id_in_response in
        # gateway/envoy.yaml, on every response): sending it back too costs
        # grpc.aio a batch of its own per call (~40 µs, bench/README.md) for a
        # header Envoy overwrites. gRPC callers still get it as initial metadata.
        self._echo_id = surface != "rest" or not _received(metadata, self.request_id)

    async def abort(self, error: AigcError) -> None:
        """Ends the RPC with `error` as a rich google.rpc.Status.

        The request id rides in the trailers too: when no message was sent,
        the error is a trailers-only response, which Envoy turns into the HTTP
        status and headers (x-request-id, x-should-retry).
        """
        self.record.failed(error)
        status = error.to_status(self.request_id)
        code, message, trailers = status_to_grpc(status)
        if not self._headers_sent:
            # Also `x-should-retry`, as on the OpenAI door: HTTP clients built on
            # Stainless-style SDKs obey it over their own rule (retry every 5xx).
            retryable = caller_should_retry(status.code, status_facts(status).retry_seconds)
            retry = "true" if retryable else "false"
            trailers = (*trailers, ("x-request-id", self.request_id), ("x-should-retry", retry))
        await self.context.abort(code, message, trailers)

    async def send_headers(self) -> None:
        """Sends the request id as initial metadata, once, right before the first answer.

        Never earlier: headers commit Envoy to HTTP 200, and a stream that fails
        before its first message must reach HTTP callers as a real 4xx/5xx.
        """
        if not self._headers_sent:
            self._headers_sent = True
            if self._echo_id:
                await self.context.send_initial_metadata((("x-request-id", self.request_id),))


def _received(metadata, request_id: str) -> bool:
    """Whether `request_id` is the x-request-id the call came with (not one made here)."""
    return any(key == "x-request-id" and value == request_id for key, value in metadata)


class AigcServicer(aigc_service_pb2_grpc.AigcServiceServicer):
    def __init__(self, engine: Engine, observability: Observability | None = None) -> None:
        self._engine = engine
        self._observability = observability or Observability()
        self._calls = InFlight()

    @property
    def engine(self) -> Engine:
        return self._engine

    async def drained(self) -> None:
        """Returns once no AigcService RPC is in flight (used by graceful shutdown)."""
        await self._calls.drained()

    def interrupt_all(self) -> int:
        """Ends every RPC still running with SHUTTING_DOWN, in-band for streams
        (server/api/calls.py `InFlight`); called when the shutdown grace is over."""
        return self._calls.interrupt_all()

    def _admit(self, rpc: _Rpc, request) -> None:
        """What every RPC checks first: the bytes decoded, and the caller's key."""
        if isinstance(request, Undecodable):
            if request.error is None:
                raise RequestTooLarge(request.size)
            raise MalformedRequest(rpc.record.method)
        if rpc.bad_timeout:
            raise InvalidRequest({f"{TIMEOUT_HEADER} header": rpc.bad_timeout})
        rpc.call.key = key = self._engine.gate.authenticate(rpc.metadata, rpc.record.peer)
        rpc.record.authenticated(key.name if key is not None else None)

    # --- chat -------------------------------------------------------------------------------------

    async def Chat(self, request, context):  # noqa: N802 - gRPC method names
        rpc = _Rpc(context, "Chat", self._observability, self._engine, streaming=False)
        with self._calls.track(rpc), rpc.record:
            try:
                self._admit(rpc, request)
                answer = await self._engine.generate(request, rpc.call)
            except (AigcError, asyncio.CancelledError) as error:
                await rpc.abort(shutdown_error(rpc, error))
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
        rpc = _Rpc(context, "Complete", self._observability, self._engine, streaming=False)
        with self._calls.track(rpc), rpc.record:
            try:
                self._admit(rpc, request)
                answer = await self._engine.generate(request, rpc.call)
            except (AigcError, asyncio.CancelledError) as error:
                await rpc.abort(shutdown_error(rpc, error))
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
        rpc = _Rpc(context, method, self._observability, self._engine, streaming=True)
        with self._calls.track(rpc), rpc.record:
            sent = False
            head = None
            stream = None
            try:
                self._admit(rpc, request)
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
            except (AigcError, asyncio.CancelledError) as caught:
                error = shutdown_error(rpc, caught)
                if sent:
                    # Already streaming: HTTP/SSE clients saw a 200 and cannot
                    # read trailers, so the failure goes in-band first.
                    failed = last(head, stream.usage if stream is not None else None)
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

    # --- embeddings ----------------------------------------------------------------------------------

    async def Embed(self, request, context):  # noqa: N802
        rpc = _Rpc(context, "Embed", self._observability, self._engine, streaming=False)
        with self._calls.track(rpc), rpc.record:
            try:
                self._admit(rpc, request)
                answer = await self._engine.embed(request, rpc.call)
            except (AigcError, asyncio.CancelledError) as error:
                await rpc.abort(shutdown_error(rpc, error))
            response = embedding_pb2.EmbedResponse(
                id=new_response_id(),
                model=answer.model,
                provider=answer.provider,
                create_time=rpc.create_time,
                embeddings=[embedding_pb2.Embedding(values=vector) for vector in answer.vectors],
                usage=answer.usage,
            )
            rpc.record.response_id = response.id
            await rpc.send_headers()
            return response

    # --- models ---------------------------------------------------------------------------------------

    async def ListModels(self, request, context):  # noqa: N802
        rpc = _Rpc(context, "ListModels", self._observability, self._engine, streaming=False)
        with self._calls.track(rpc), rpc.record:
            try:
                self._admit(rpc, request)
                response = self._list_models(request, rpc.call.key)
            except (AigcError, asyncio.CancelledError) as error:
                await rpc.abort(shutdown_error(rpc, error))
            await rpc.send_headers()
            return response

    def _list_models(
        self, request: aigc_service_pb2.ListModelsRequest, key: CallerKey | None
    ) -> aigc_service_pb2.ListModelsResponse:
        offset = _page_offset(request.page_token)
        if request.page_size < 0:
            raise InvalidRequest({"page_size": "must not be negative"})
        size = min(request.page_size or _DEFAULT_PAGE_SIZE, _MAX_PAGE_SIZE)
        router = self._engine.router
        # A caller sees the models its key may use.
        routes = [r for r in router.models() if key is None or key.allows(r.id, *r.aliases)]
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


def register(servicer: AigcServicer, server: grpc.aio.Server) -> None:
    """Adds AigcService to `server`, like the generated add_AigcServiceServicer_to_server,
    but with deserializers that never raise: grpcio answers undecodable bytes with
    UNKNOWN and its own text, before any handler runs; ours then answer
    INVALID_ARGUMENT (MALFORMED_REQUEST) with the request id and an access line.
    A message over MAX_REQUEST_BYTES is not parsed at all: REQUEST_TOO_LARGE."""

    def lenient(message):
        def decode(data: bytes):
            if len(data) > MAX_REQUEST_BYTES:
                return Undecodable(None, len(data))  # not even parsed
            try:
                return message.FromString(data)
            except Exception as exc:  # DecodeError, or bytes of another message
                return Undecodable(exc, len(data))

        return decode

    pb = aigc_service_pb2
    handlers = {
        "Chat": grpc.unary_unary_rpc_method_handler(
            servicer.Chat, lenient(pb.ChatRequest), pb.ChatResponse.SerializeToString
        ),
        "StreamChat": grpc.unary_stream_rpc_method_handler(
            servicer.StreamChat, lenient(pb.ChatRequest), pb.ChatResponse.SerializeToString
        ),
        "Complete": grpc.unary_unary_rpc_method_handler(
            servicer.Complete, lenient(pb.CompleteRequest), pb.CompleteResponse.SerializeToString
        ),
        "StreamComplete": grpc.unary_stream_rpc_method_handler(
            servicer.StreamComplete, lenient(pb.CompleteRequest), pb.CompleteResponse.SerializeToString
        ),
        "Embed": grpc.unary_unary_rpc_method_handler(
            servicer.Embed, lenient(embedding_pb2.EmbedRequest), embedding_pb2.EmbedResponse.SerializeToString
        ),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            servicer.ListModels, lenient(pb.ListModelsRequest), pb.ListModelsResponse.SerializeToString
        ),
    }
    service = pb.DESCRIPTOR.services_by_name["AigcService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


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


__all__ = ["TIMEOUT_HEADER", "AigcServicer", "register", "status_to_grpc"]
