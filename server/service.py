"""The AigcService RPCs: validate, route, call the provider, shape the answer.

Unary and streaming twins share one code path per shape (chat, completion):
`_Shape` knows how to fill a ChatResponse or a CompleteResponse, everything
else - request ids, deadlines, in-band stream errors, cancellation - is common.

Every RPC runs inside `with call.record:` (server/observability/rpc.py), which
puts the request id on every log line of the RPC and, however the RPC ends -
answer, abort, or the caller going away - writes one access line, updates
the metrics and ends the trace spans.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from aigc.v1 import aigc_service_pb2, aigc_service_pb2_grpc, content_pb2, model_pb2
from server import validation
from server.errors import (
    AigcError,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    ProviderNotConfigured,
    UpstreamError,
    UpstreamFailure,
    status_to_grpc,
)
from server.observability import Observability, RpcRecord
from server.providers.base import Finish, GenerateRequest, Usage
from server.routing import ModelRoute, Router

log = logging.getLogger(__name__)

_FINISH_TO_PROTO = {
    Finish.STOP: content_pb2.FINISH_REASON_STOP,
    Finish.MAX_TOKENS: content_pb2.FINISH_REASON_MAX_TOKENS,
    Finish.CONTENT_FILTER: content_pb2.FINISH_REASON_CONTENT_FILTER,
    Finish.OTHER: content_pb2.FINISH_REASON_OTHER,
}
# Accept a caller's request id only if it is safe to echo into headers and logs.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_DEFAULT_PAGE_SIZE = 50
# How much earlier than the caller's deadline a provider call gives up (see _Call.timeout).
_DEADLINE_MARGIN_MIN = 0.05
_DEADLINE_MARGIN_MAX = 0.25
_MAX_PAGE_SIZE = 1000

Response = aigc_service_pb2.ChatResponse | aigc_service_pb2.CompleteResponse


class _Shape:
    """How one kind of generation is put into its response message."""

    def __init__(self, message_type: type[Response], put_text: Callable[[Any, str], None]) -> None:
        self.message_type = message_type
        self.put_text = put_text


def _put_chat_text(response: aigc_service_pb2.ChatResponse, text: str) -> None:
    response.message.role = content_pb2.ROLE_ASSISTANT
    response.message.content = text


def _put_completion_text(response: aigc_service_pb2.CompleteResponse, text: str) -> None:
    response.text = text


_CHAT = _Shape(aigc_service_pb2.ChatResponse, _put_chat_text)
_COMPLETION = _Shape(aigc_service_pb2.CompleteResponse, _put_completion_text)


class _Call:
    """Per-RPC state: request id, route, timing, and the observability record."""

    def __init__(self, context: grpc.aio.ServicerContext, method: str, observability: Observability) -> None:
        self.context = context
        self.method = method
        self.request_id = _request_id(context)
        self.record: RpcRecord = observability.rpc(method, self.request_id, context)
        self.create_time = timestamp_pb2.Timestamp()
        self.create_time.GetCurrentTime()
        self.route: ModelRoute | None = None
        self.response_id = ""
        self._headers_sent = False

    def timeout(self) -> float | None:
        """Seconds the provider may take: the caller's deadline, minus a margin.

        Without the margin the provider's own deadline and gRPC's fire at the
        same instant, and when gRPC wins the caller gets a bare
        DEADLINE_EXCEEDED - no ErrorInfo, no request id. Giving up a little
        earlier lets us answer with the full status (and close the upstream).
        """
        remaining = self.context.time_remaining()
        if remaining is None:
            return None
        margin = min(_DEADLINE_MARGIN_MAX, max(_DEADLINE_MARGIN_MIN, remaining * 0.02))
        return max(0.001, remaining - margin)

    def response(
        self,
        shape: _Shape,
        text: str = "",
        finish: Finish | None = None,
        usage: Usage | None = None,
    ) -> Response:
        assert self.route is not None
        response = shape.message_type(
            id=self.response_id,
            model=self.route.id,
            provider=self.route.provider.name,
            create_time=self.create_time,
        )
        shape.put_text(response, text)
        if finish is not None:
            response.finish_reason = _FINISH_TO_PROTO[finish]
        if usage is not None:
            response.usage.prompt_tokens = usage.prompt_tokens
            response.usage.completion_tokens = usage.completion_tokens
            response.usage.total_tokens = usage.total_tokens
        return response

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

    def set_response_id(self, response_id: str) -> None:
        self.response_id = self.record.response_id = response_id


class AigcServicer(aigc_service_pb2_grpc.AigcServiceServicer):
    def __init__(self, router: Router, observability: Observability | None = None) -> None:
        self._router = router
        self._observability = observability or Observability()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def drained(self) -> None:
        """Returns once no AigcService RPC is in flight (used by graceful shutdown)."""
        await self._idle.wait()

    @contextlib.contextmanager
    def _in_flight(self):
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def Chat(self, request, context):  # noqa: N802 - gRPC method names
        return await self._unary(context, "Chat", _CHAT, lambda call: self._prepare_chat(request, call))

    async def StreamChat(self, request, context):  # noqa: N802
        async for response in self._stream(
            context, "StreamChat", _CHAT, lambda call: self._prepare_chat(request, call)
        ):
            yield response

    async def Complete(self, request, context):  # noqa: N802
        return await self._unary(
            context, "Complete", _COMPLETION, lambda call: self._prepare_completion(request, call)
        )

    async def StreamComplete(self, request, context):  # noqa: N802
        async for response in self._stream(
            context, "StreamComplete", _COMPLETION, lambda call: self._prepare_completion(request, call)
        ):
            yield response

    async def ListModels(self, request, context):  # noqa: N802
        call = _Call(context, "ListModels", self._observability)
        with self._in_flight(), call.record:
            response = await self._list_models(request, call)
            await call.send_headers()
            return response

    async def _list_models(self, request, call: _Call) -> aigc_service_pb2.ListModelsResponse:
        try:
            offset = _page_offset(request.page_token)
            if request.page_size < 0:
                raise InvalidRequest({"page_size": "must not be negative"})
        except AigcError as error:
            await call.abort(error)
        size = min(request.page_size or _DEFAULT_PAGE_SIZE, _MAX_PAGE_SIZE)
        routes = self._router.models()
        page = routes[offset : offset + size]
        response = aigc_service_pb2.ListModelsResponse(
            models=[
                model_pb2.Model(
                    id=route.id,
                    provider=route.provider.name,
                    upstream_model=route.upstream_model,
                    aliases=route.aliases,
                    is_default=route is self._router.default,
                    ready=route.provider.ready(),
                    description=route.description,
                )
                for route in page
            ]
        )
        if offset + size < len(routes):
            response.next_page_token = base64.urlsafe_b64encode(f"offset:{offset + size}".encode()).decode()
        return response

    # --- shared paths ---------------------------------------------------------

    def _prepare_chat(self, request: aigc_service_pb2.ChatRequest, call: _Call) -> GenerateRequest:
        self._note_model(request.model, call)
        generate_request = validation.chat_request(request, call.timeout())
        return self._route(request.model, call, generate_request)

    def _prepare_completion(self, request: aigc_service_pb2.CompleteRequest, call: _Call) -> GenerateRequest:
        self._note_model(request.model, call)
        generate_request = validation.complete_request(request, call.timeout())
        return self._route(request.model, call, generate_request)

    def _note_model(self, model: str, call: _Call) -> None:
        """Tells the record which model was asked for, before validation can fail,
        so even an invalid request is counted under its (configured) model."""
        try:
            label: str | None = self._router.resolve(model).id
        except ModelNotFound:
            label = None
        call.record.requested(model, label)

    def _route(self, model: str, call: _Call, generate_request: GenerateRequest) -> GenerateRequest:
        """Picks the provider; the request was validated first, so a bad request
        is INVALID_ARGUMENT whatever model it names."""
        call.route = route = self._router.resolve(model)
        call.record.routed(route.id, route.provider.name, route.upstream_model)
        if not route.provider.ready():
            raise ProviderNotConfigured(route.id, route.provider.name, route.provider.not_ready_hint())
        generate_request = dataclasses.replace(generate_request, upstream_model=route.upstream_model)
        call.record.capture_prompt(generate_request)
        return generate_request

    async def _unary(self, context, method: str, shape: _Shape, prepare) -> Response:
        call = _Call(context, method, self._observability)
        with self._in_flight(), call.record:
            try:
                with _unexpected_errors(call):
                    generate_request = prepare(call)
                    assert call.route is not None
                    result = await call.record.upstream(call.route.provider.generate(generate_request))
            except AigcError as error:
                await call.abort(error)
            call.set_response_id(result.response_id or _new_response_id())
            await call.send_headers()
            return call.response(shape, result.text, result.finish, result.usage)

    async def _stream(self, context, method: str, shape: _Shape, prepare) -> AsyncIterator[Response]:
        call = _Call(context, method, self._observability)
        with self._in_flight(), call.record:
            finish: Finish | None = None
            usage: Usage | None = None
            sent = 0
            try:
                with _unexpected_errors(call):
                    generate_request = prepare(call)
                    assert call.route is not None
                    # aclosing: if the caller cancels, the provider's stream is
                    # closed right here, which closes the upstream HTTP response.
                    async with contextlib.aclosing(call.route.provider.stream(generate_request)) as chunks:
                        async for chunk in call.record.upstream_stream(chunks):
                            if not call.response_id:
                                call.set_response_id(chunk.response_id or _new_response_id())
                            finish = chunk.finish or finish
                            usage = chunk.usage or usage
                            if chunk.text:
                                sent += 1
                                await call.send_headers()
                                yield call.response(shape, chunk.text)
                    if finish is None:
                        raise UpstreamError(
                            UpstreamFailure.STREAM_INTERRUPTED,
                            "the stream ended without a finish reason",
                            provider=call.route.provider.name,
                        )
            except AigcError as error:
                if sent:
                    # Already streaming: HTTP/SSE clients saw a 200 and cannot
                    # read trailers, so the failure goes in-band first.
                    status = error.to_status(call.request_id)
                    last = call.response(shape, usage=usage)
                    last.finish_reason = content_pb2.FINISH_REASON_ERROR
                    last.error.CopyFrom(status)
                    yield last
                await call.abort(error)
                return
            if not call.response_id:
                call.set_response_id(_new_response_id())
            await call.send_headers()
            yield call.response(shape, finish=finish, usage=usage)


@contextlib.contextmanager
def _unexpected_errors(call: _Call):
    """Turns a bug into INTERNAL with the request id; the traceback goes to the log."""
    try:
        yield
    except AigcError:
        raise
    except Exception as exc:
        log.exception("unexpected error in %s (request %s)", call.method, call.request_id)
        raise InternalError(
            f"internal error; the server log has details under request id {call.request_id}"
        ) from exc


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex


def _new_response_id() -> str:
    return f"resp-{uuid.uuid4().hex}"


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
