"""The Anthropic Messages door: POST /anthropic/v1/messages, GET /anthropic/v1/models.

Code written against the Anthropic SDKs points its base URL at
`http://HOST:8000/anthropic` and works, on any of our models. It shares the
OpenAI door's listener (AIGC_OPENAI_ADDRESS, in every worker; Envoy routes
/anthropic/v1/ there) and so its engine, gate (keys - `x-api-key` or
`authorization: Bearer` -, quotas), limits, calls in flight and drain; logs
and metrics say `surface: anthropic`. The translation is wire.py.

Streams are Anthropic's named SSE events, written as they come; an error
before the first event is a real HTTP status with Anthropic's error body,
after it an `error` event (what the SDKs raise from) and the end of the
stream. `count_tokens` is not offered (the typed API cannot count without
generating): it answers 404 in Anthropic's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from google.rpc import code_pb2

from aigc.v1 import aigc_service_pb2
from server.api.anthropic_door import wire
from server.api.calls import shutdown_error
from server.api.sse import end_sse, json_response, open_sse, send_events
from server.errors import AigcError, InvalidRequest

if TYPE_CHECKING:
    from server.api.openai_compat.app import OpenAICompat

PREFIX = "/anthropic/v1"
SURFACE = "anthropic"


class CountTokensNotOffered(AigcError):
    """Counting tokens needs the provider's tokenizer; the typed API has no such RPC."""

    code = code_pb2.NOT_FOUND
    reason = "NOT_OFFERED"

    def __init__(self) -> None:
        super().__init__("count_tokens is not offered by this service; usage comes back with every answer")


def anthropic_routes(door: OpenAICompat) -> list[web.RouteDef]:
    handlers = _Handlers(door)
    return [
        web.post(f"{PREFIX}/messages", handlers.messages),
        web.post(f"{PREFIX}/messages/count_tokens", handlers.count_tokens),
        web.get(f"{PREFIX}/models", handlers.models),
    ]


class _Handlers:
    def __init__(self, door: OpenAICompat) -> None:
        self._door = door

    def _call(self, request: web.Request, method: str, *, streaming: bool = False):
        from server.api.openai_compat.app import _Call

        return _Call(request, method, self._door._observability, streaming=streaming, surface=SURFACE)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        from server.api.openai_compat.app import _Unreadable

        body = None
        try:
            body = await self._door._read_json(request)
            chat, stream = wire.messages_request(body)
        except _Unreadable as unreadable:
            return await self._refuse(request, "Chat", unreadable.error)
        except InvalidRequest as error:
            streamed = isinstance(body, dict) and body.get("stream") is True
            return await self._refuse(
                request, "StreamChat" if streamed else "Chat", error, streaming=streamed
            )
        if stream:
            return await self._stream(request, chat)
        call = self._call(request, "Chat")
        with self._door._calls.track(call), call.record:
            try:
                self._door._admit(call, request, x_api_key=True)
                answer = await self._door._engine.generate(chat, call.call)
            except (AigcError, asyncio.CancelledError) as caught:
                return self._error(call, shutdown_error(call, caught))
            message = wire.message(
                answer.response_id, answer.model, answer.parts, answer.finish, answer.usage
            )
            return json_response(message, call.request_id)

    async def _stream(self, request: web.Request, chat: aigc_service_pb2.ChatRequest) -> web.StreamResponse:
        call = self._call(request, "StreamChat", streaming=True)
        with self._door._calls.track(call), call.record:
            response: web.StreamResponse | None = None
            writer: wire.EventWriter | None = None
            try:
                self._door._admit(call, request, x_api_key=True)
                async with self._door._engine.stream(chat, call.call) as stream:
                    async for parts in stream:
                        if writer is None:
                            writer = wire.EventWriter(stream.response_id or call.request_id, stream.model)
                            response = await open_sse(request, call.request_id)
                        await send_events(response, writer.deltas(parts))
                if writer is None:
                    writer = wire.EventWriter(stream.response_id or call.request_id, stream.model)
                    response = await open_sse(request, call.request_id)
                await send_events(response, writer.finish(stream.finish, stream.usage))
                await end_sse(response)
                return response
            except (AigcError, asyncio.CancelledError) as caught:
                return await self._fail_stream(call, response, shutdown_error(call, caught))

    async def count_tokens(self, request: web.Request) -> web.Response:
        return await self._refuse(request, "CountTokens", CountTokensNotOffered())

    async def models(self, request: web.Request) -> web.Response:
        call = self._call(request, "ListModels")
        with self._door._calls.track(call), call.record:
            try:
                self._door._admit(call, request, x_api_key=True)
            except AigcError as error:
                return self._error(call, error)
            routes = self._door._allowed(call)
            data = [wire.model_object(r.id, r.description) for r in routes]
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            page = {"data": data, "has_more": False, "first_id": first, "last_id": last}
            return json_response(page, call.request_id)

    async def _refuse(
        self, request: web.Request, method: str, error: AigcError, *, streaming: bool = False
    ) -> web.Response:
        """A request refused before it became an aigc.v1 request: logged and counted like any other."""
        call = self._call(request, method, streaming=streaming)
        with call.record:
            try:
                self._door._admit(call, request, x_api_key=True)
            except AigcError as auth_error:
                return self._error(call, auth_error)  # no key: that comes first
            return self._error(call, error)

    async def _fail_stream(self, call, response: web.StreamResponse | None, error: AigcError):
        if response is None:
            return self._error(call, error)
        call.record.failed(error)
        _, body, _ = wire.error(error.to_status(call.request_id))
        with contextlib.suppress(ConnectionError):
            await response.write(wire.event("error", body))
            await response.write_eof()
        return response

    def _error(self, call, error: AigcError) -> web.Response:
        call.record.failed(error)
        status, body, headers = wire.error(error.to_status(call.request_id))
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers={**headers, "x-request-id": call.request_id},
        )


__all__ = ["PREFIX", "CountTokensNotOffered", "anthropic_routes"]
