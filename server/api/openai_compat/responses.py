"""The OpenAI Responses door: POST /openai/v1/responses, on the OpenAI door's listener.

Stateless: every request carries its whole conversation (`store: false`);
`previous_response_id` is refused with 400 (nothing is stored to continue
from). Same engine, gate, limits, fallbacks, logs and metrics as the chat
door; logs and metrics say `surface: openai`, method Chat / StreamChat. The
translation is responses_wire.py.

A stream is the Responses API's named events, written as they come; an error
before the first event is a real HTTP status with the OpenAI error body,
after it an `error` event (the openai SDK raises from it) and the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web

from aigc.v1 import aigc_service_pb2
from server.api.calls import shutdown_error
from server.api.openai_compat import responses_wire, wire
from server.api.sse import end_sse, json_response, open_sse, send_events
from server.errors import AigcError, InvalidRequest

if TYPE_CHECKING:
    from server.api.openai_compat.app import OpenAICompat


def responses_routes(door: OpenAICompat, prefix: str) -> list[web.RouteDef]:
    return [web.post(f"{prefix}/responses", _Responses(door).create)]


class _Responses:
    def __init__(self, door: OpenAICompat) -> None:
        self._door = door

    def _call(self, request: web.Request, method: str, *, streaming: bool = False):
        from server.api.openai_compat.app import _Call

        return _Call(request, method, self._door._observability, streaming=streaming)

    async def create(self, request: web.Request) -> web.StreamResponse:
        from server.api.openai_compat.app import _Unreadable

        body = None
        try:
            body = await self._door._read_json(request)
            chat, stream = responses_wire.responses_request(body)
        except _Unreadable as unreadable:
            return await self._door._refuse(request, "Chat", unreadable.error)
        except InvalidRequest as error:
            streamed = isinstance(body, dict) and body.get("stream") is True
            return await self._door._refuse(
                request, "StreamChat" if streamed else "Chat", error, streaming=streamed
            )
        if stream:
            return await self._stream(request, chat)
        call = self._call(request, "Chat")
        with self._door._calls.track(call), call.record:
            try:
                self._door._admit(call, request)
                answer = await self._door._engine.generate(chat, call.call)
            except (AigcError, asyncio.CancelledError) as caught:
                return self._door._error(call, shutdown_error(call, caught))
            output = responses_wire.output_items(answer.parts)
            done = responses_wire.response(
                answer.response_id, answer.model, output, answer.finish, answer.usage
            )
            return json_response(done, call.request_id)

    async def _stream(self, request: web.Request, chat: aigc_service_pb2.ChatRequest) -> web.StreamResponse:
        call = self._call(request, "StreamChat", streaming=True)
        with self._door._calls.track(call), call.record:
            response: web.StreamResponse | None = None
            writer: responses_wire.EventWriter | None = None
            try:
                self._door._admit(call, request)
                async with self._door._engine.stream(chat, call.call) as stream:
                    async for parts in stream:
                        if writer is None:
                            writer = responses_wire.EventWriter(
                                stream.response_id or call.request_id, stream.model
                            )
                            response = await open_sse(request, call.request_id)
                        await send_events(response, writer.deltas(parts))
                if writer is None:
                    writer = responses_wire.EventWriter(stream.response_id or call.request_id, stream.model)
                    response = await open_sse(request, call.request_id)
                await send_events(response, writer.finish(stream.finish, stream.usage))
                await end_sse(response)
                return response
            except (AigcError, asyncio.CancelledError) as caught:
                error = shutdown_error(call, caught)
                if response is None or writer is None:
                    return self._door._error(call, error)
                call.record.failed(error)
                _, body, _ = wire.error(error.to_status(call.request_id))
                with contextlib.suppress(ConnectionError):
                    await response.write(writer.error(body))
                    await response.write_eof()
                return response


__all__ = ["responses_routes"]
