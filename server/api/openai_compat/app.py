"""The OpenAI-compatible door: /openai/v1/chat/completions, /completions, /embeddings, /models.

Code written against the OpenAI SDKs (or frameworks on them) points its base
URL at `http://HOST:8000/openai/v1` and works: Envoy routes that prefix to
this small aiohttp server, which runs in every server worker next to the
gRPC server (AIGC_OPENAI_ADDRESS). It is a thin adapter, like the gRPC
servicer: the request is translated to aigc.v1 (wire.py), the engine does
the rest - the same gate (keys, quotas), limits, routing, retries,
fallbacks, logs and metrics - and the answer is translated back. The proto
stays the single source of truth for our own API; this surface follows
OpenAI's.

Streams are written as they come (`data: {chunk}` events, `data: [DONE]` at
the end); an error before the first chunk is a real HTTP status with an
OpenAI-style error body, after it an `error` event (what the OpenAI SDKs
raise from) and the end of the stream - never a clean end. A caller that
hangs up cancels the handler (handler_cancellation), which closes the
upstream at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import http_exceptions, web, web_protocol, web_request, web_server

from aigc.v1 import aigc_service_pb2
from server.api.calls import (
    TIMEOUT_HEADER,
    InFlight,
    MalformedHttpRequest,
    MalformedRequest,
    RequestHeadersTooLarge,
    RequestTooLarge,
    UnknownRoute,
    provider_deadline,
    remaining_seconds,
    request_id,
    shutdown_error,
)
from server.api.openai_compat import embeddings, wire
from server.api.sse import end_sse, json_response, open_sse, send_events
from server.core.engine import Call, Engine
from server.core.limits import MAX_REQUEST_BYTES, MAX_REQUEST_HEADER_KB, MAX_REQUEST_HEADERS
from server.errors import AigcError, InvalidRequest, ModelNotFound
from server.observability import Observability

log = logging.getLogger(__name__)

PREFIX = "/openai/v1"


class _Call:
    """One HTTP call's state, for InFlight (task, shutting_down) and the engine (call)."""

    __slots__ = ("bad_timeout", "call", "record", "request_id", "shutting_down", "task")

    def __init__(
        self,
        request: web.Request,
        method: str,
        observability: Observability,
        *,
        streaming: bool = False,
        surface: str = "openai",
    ) -> None:
        headers = [(k.lower(), v) for k, v in request.headers.items()]
        self.request_id = request_id(headers)
        remaining, self.bad_timeout = remaining_seconds(None, headers)
        resource = request.match_info.route.resource
        self.record = observability.rpc(
            method,
            self.request_id,
            streaming=streaming,
            surface=surface,
            peer=request.remote or "",
            time_remaining=remaining,
            metadata=headers,
            http_method=request.method,
            http_route=resource.canonical if resource is not None else request.path,
        )
        self.call = Call(self.request_id, self.record, provider_deadline(remaining))
        self.task = asyncio.current_task()
        self.shutting_down = False


class OpenAICompat:
    def __init__(self, engine: Engine, observability: Observability) -> None:
        self._engine = engine
        self._observability = observability
        self._calls = InFlight()
        self.app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_unknown_routes])
        self.app.add_routes(
            [
                web.post(f"{PREFIX}/chat/completions", self.chat_completions),
                web.post(f"{PREFIX}/completions", self.completions),
                web.post(f"{PREFIX}/embeddings", self.embeddings),
                web.get(f"{PREFIX}/models", self.models),
                web.get(PREFIX + "/models/{model:.+}", self.model),
            ]
        )
        # The other doors share this listener, and so its calls in flight and drain
        # (imported here: they import this module).
        from server.api.anthropic_door.app import anthropic_routes
        from server.api.openai_compat.responses import responses_routes

        self.app.add_routes(responses_routes(self, PREFIX))
        self.app.add_routes(anthropic_routes(self))
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str, port: int, *, shared_port: bool) -> None:
        # handler_cancellation: a caller hanging up cancels its handler, so the
        # upstream stream is closed at once (aiohttp's default keeps it running).
        # The header limits are the gateway's (server/core/limits.py): aiohttp's own
        # 8 KiB refused what Envoy passes on. Each header may use the whole budget;
        # Envoy in front bounds the sum (+16 headers for those Envoy adds).
        self._runner = _DoorRunner(
            self.app,
            handler_cancellation=True,
            access_log=None,
            max_line_size=MAX_REQUEST_HEADER_KB * 1024,
            max_field_size=MAX_REQUEST_HEADER_KB * 1024,
            max_headers=MAX_REQUEST_HEADERS + 16,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_port=shared_port or None, backlog=1024)
        await site.start()

    async def stop_listening(self) -> None:
        """No new connections; calls in flight go on (shutdown drains them)."""
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drained(self) -> None:
        await self._calls.drained()

    def interrupt_all(self) -> int:
        return self._calls.interrupt_all()

    # --- handlers ------------------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._read_json(request)
            chat, stream, include_usage = wire.chat_request(body)
        except _Unreadable as unreadable:
            return await self._refuse(request, "Chat", unreadable.error)
        except InvalidRequest as error:
            streamed = _streamed(body)
            return await self._refuse(
                request, "StreamChat" if streamed else "Chat", error, streaming=streamed
            )
        if stream:
            return await self._stream_chat(request, chat, include_usage)
        call = _Call(request, "Chat", self._observability)
        with self._calls.track(call), call.record:
            try:
                self._admit(call, request)
                answer = await self._engine.generate(chat, call.call)
            except (AigcError, asyncio.CancelledError) as caught:
                return self._error(call, shutdown_error(call, caught))
            return json_response(
                wire.chat_completion(
                    answer.response_id, answer.model, answer.parts, answer.finish, answer.usage
                ),
                call.request_id,
            )

    async def _stream_chat(
        self, request: web.Request, chat: aigc_service_pb2.ChatRequest, include_usage: bool
    ) -> web.StreamResponse:
        call = _Call(request, "StreamChat", self._observability, streaming=True)
        with self._calls.track(call), call.record:
            response: web.StreamResponse | None = None
            writer: wire.ChunkWriter | None = None
            stream = None
            try:
                self._admit(call, request)
                async with self._engine.stream(chat, call.call) as stream:
                    async for parts in stream:
                        if writer is None:
                            writer = wire.ChunkWriter(stream.response_id or call.request_id, stream.model)
                            response = await open_sse(request, call.request_id)
                        await _send(response, writer.deltas(parts))
                if writer is None:
                    writer = wire.ChunkWriter(stream.response_id or call.request_id, stream.model)
                    response = await open_sse(request, call.request_id)
                await _send(response, writer.finish(stream.finish, stream.usage, include_usage))
                await _end_sse(response)
                return response
            except (AigcError, asyncio.CancelledError) as caught:
                return await self._fail_stream(call, response, shutdown_error(call, caught))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._read_json(request)
            complete, stream, include_usage = wire.completion_request(body)
        except _Unreadable as unreadable:
            return await self._refuse(request, "Complete", unreadable.error)
        except InvalidRequest as error:
            streamed = _streamed(body)
            method = "StreamComplete" if streamed else "Complete"
            return await self._refuse(request, method, error, streaming=streamed)
        method = "StreamComplete" if stream else "Complete"
        call = _Call(request, method, self._observability, streaming=stream)
        with self._calls.track(call), call.record:
            response: web.StreamResponse | None = None
            opened = None
            try:
                self._admit(call, request)
                if not stream:
                    answer = await self._engine.generate(complete, call.call)
                    completion = wire.text_completion(
                        answer.response_id, answer.model, answer.text(), answer.finish, answer.usage
                    )
                    return json_response(completion, call.request_id)
                async with self._engine.stream(complete, call.call) as opened:
                    async for parts in opened:
                        text = "".join(p.text for p in parts if p.WhichOneof("data") == "text")
                        if not text:
                            continue
                        if response is None:
                            response = await open_sse(request, call.request_id)
                        chunk = wire.text_completion(
                            opened.response_id or call.request_id, opened.model, text, 0, None, chunk=True
                        )
                        await _send(response, [chunk])
                if response is None:
                    response = await open_sse(request, call.request_id)
                rid = opened.response_id or call.request_id
                last = [wire.text_completion(rid, opened.model, "", opened.finish, None, chunk=True)]
                if include_usage:
                    usage_chunk = wire.text_completion(rid, opened.model, "", 0, None, chunk=True)
                    usage_chunk["choices"], usage_chunk["usage"] = [], wire.usage(opened.usage)
                    last.append(usage_chunk)
                await _send(response, last)
                await _end_sse(response)
                return response
            except (AigcError, asyncio.CancelledError) as caught:
                return await self._fail_stream(call, response, shutdown_error(call, caught))

    async def embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await self._read_json(request)
            embed, encoding = embeddings.embed_request(body)
        except _Unreadable as unreadable:
            return await self._refuse(request, "Embed", unreadable.error)
        except InvalidRequest as error:
            return await self._refuse(request, "Embed", error)
        call = _Call(request, "Embed", self._observability)
        with self._calls.track(call), call.record:
            try:
                self._admit(call, request)
                answer = await self._engine.embed(embed, call.call)
            except (AigcError, asyncio.CancelledError) as caught:
                return self._error(call, shutdown_error(call, caught))
            tokens = answer.usage.prompt_tokens if answer.usage is not None else None
            payload = embeddings.embeddings_response(answer.model, answer.vectors, tokens, encoding)
            return json_response(payload, call.request_id)

    async def models(self, request: web.Request) -> web.Response:
        call = _Call(request, "ListModels", self._observability)
        with self._calls.track(call), call.record:
            try:
                self._admit(call, request)
            except AigcError as error:
                return self._error(call, error)
            data = [wire.model_object(route.id, route.provider.name) for route in self._allowed(call)]
            return json_response({"object": "list", "data": data}, call.request_id)

    async def model(self, request: web.Request) -> web.Response:
        call = _Call(request, "ListModels", self._observability)
        name = request.match_info["model"]
        with self._calls.track(call), call.record:
            try:
                self._admit(call, request)
                route = next((r for r in self._allowed(call) if name in (r.id, *r.aliases)), None)
                if route is None:
                    raise ModelNotFound(name)
            except AigcError as error:
                return self._error(call, error)
            return json_response(wire.model_object(route.id, route.provider.name), call.request_id)

    # --- shared ----------------------------------------------------------------------------------

    def _admit(self, call: _Call, request: web.Request, *, x_api_key: bool = False) -> None:
        """The caller's key (the same `authorization: Bearer` as the SDKs send; Anthropic's
        SDKs send `x-api-key` instead: `x_api_key`), and the timeout header."""
        if call.bad_timeout:
            raise InvalidRequest({f"{TIMEOUT_HEADER} header": call.bad_timeout})
        metadata = [(name.lower(), value) for name, value in request.headers.items()]
        if x_api_key and "authorization" not in request.headers and request.headers.get("x-api-key"):
            # Anthropic's SDKs and Claude Code send the key as x-api-key: the same key.
            metadata.append(("authorization", f"Bearer {request.headers['x-api-key']}"))
        key = self._engine.gate.authenticate(metadata, request.remote or "")
        call.call.key = key
        call.record.authenticated(key.name if key is not None else None)

    def _allowed(self, call: _Call):
        key = call.call.key
        return [r for r in self._engine.router.models() if key is None or key.allows(r.id, *r.aliases)]

    async def _read_json(self, request: web.Request) -> Any:
        """The body as JSON; raises _Unreadable (refused before any engine work) when it is not."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Unreadable(RequestTooLarge(request.content_length)) from None
        if request.content_type != "application/json":
            why = f"the body must be application/json, not {request.content_type!r}"
            raise _Unreadable(MalformedRequest("", why))
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _Unreadable(MalformedRequest("", f"the body is not valid JSON: {exc}")) from None

    async def _refuse(
        self, request: web.Request, method: str, error: AigcError, *, streaming: bool = False
    ) -> web.Response:
        """A request refused before it became an aigc.v1 request: logged and counted like any other."""
        call = _Call(request, method, self._observability, streaming=streaming)
        with call.record:
            try:
                self._admit(call, request)
            except AigcError as auth_error:
                return self._error(call, auth_error)  # no key: that comes first
            return self._error(call, error)

    async def _fail_stream(
        self, call: _Call, response: web.StreamResponse | None, error: AigcError
    ) -> web.StreamResponse:
        """Before the first chunk (`response` None) a real HTTP status. Already
        streaming, the error goes in-band (an `error` event, what the SDKs raise
        from), then the stream ends - never `[DONE]`. A caller already gone has
        nothing to be told."""
        if response is None:
            return self._error(call, error)
        call.record.failed(error)
        _, body, _ = wire.error(error.to_status(call.request_id))
        with contextlib.suppress(ConnectionError):
            await response.write(b"data: " + orjson.dumps(body) + b"\n\n")
            await response.write_eof()
        return response

    def _error(self, call: _Call, error: AigcError) -> web.Response:
        call.record.failed(error)
        return _error_response(error, call.request_id)


@web.middleware
async def _unknown_routes(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's 404 and 405 are text/plain (the SDKs read code=None): ours are
    OpenAI-shaped, UNKNOWN_ROUTE, as Envoy answers an unknown path or method."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        rid = request_id([(k.lower(), v) for k, v in request.headers.items()])
        return _error_response(UnknownRoute(request.method, request.path), rid)


def _error_response(error: AigcError, rid: str, http_status: int | None = None) -> web.Response:
    status, body, headers = wire.error(error.to_status(rid))
    return web.Response(
        status=http_status or status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={**headers, "x-request-id": rid},
    )


class _DoorProtocol(web_protocol.RequestHandler):
    """aiohttp's handler for one connection, with our answer to a request its parser
    refuses: aiohttp's is text/plain, quotes the offending line (an over-long
    `authorization` header is a key) and logs it with a traceback at ERROR."""

    def handle_error(
        self,
        request: web_request.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)  # a bug: logged at ERROR
        rid = request_id([])
        if isinstance(exc, http_exceptions.LineTooLong) or "Too many headers" in str(exc):
            error: AigcError = RequestHeadersTooLarge()
            http_status = 431
        else:
            # The class name only: the parser's text can quote the request.
            error = MalformedHttpRequest(f"the HTTP request could not be parsed ({type(exc).__name__})")
            http_status = None
        log.info(
            "refused an unparsable HTTP request from %s: %s",
            request.remote,
            error.reason,
            extra={"request_id": rid, "reason": error.reason},
        )
        response = _error_response(error, rid, http_status)
        response.force_close()
        return response


class _DoorServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _DoorProtocol(self, loop=self._loop, **self._kwargs)


class _DoorRunner(web.AppRunner):
    async def _make_server(self) -> web_server.Server:
        made = await super()._make_server()
        # The same server (handler, request factory, options), making _DoorProtocols.
        return _DoorServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )


class _Unreadable(Exception):
    """A body that is not JSON (or too large): refused with `error`."""

    def __init__(self, error: AigcError) -> None:
        super().__init__(error.message)
        self.error = error


def _streamed(body: Any) -> bool:
    return isinstance(body, dict) and body.get("stream") is True


async def _end_sse(response: web.StreamResponse | None) -> None:
    await end_sse(response, b"data: [DONE]\n\n")


async def _send(response: web.StreamResponse | None, chunks: list[dict]) -> None:
    await send_events(response, [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks])


__all__ = ["PREFIX", "OpenAICompat"]
