"""The HTTP doors' replies: JSON bodies, and Server-Sent Events streams.

One home for the three doors (OpenAI chat, OpenAI Responses, Anthropic
Messages), so each stream treats a caller who hung up the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import orjson
from aiohttp import web

SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}


def json_response(payload: dict, rid: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), content_type="application/json", headers={"x-request-id": rid}
    )


@contextlib.contextmanager
def hung_up_is_cancelled() -> Iterator[None]:
    """A write after the caller hung up raises ConnectionError ("Cannot write to
    closing transport") when it comes before aiohttp's cancel of this handler:
    the same event as that cancel, so it ends the same way, CANCELLED (it was
    logged as an UNKNOWN error)."""
    try:
        yield
    except ConnectionError:
        raise asyncio.CancelledError from None


async def open_sse(request: web.Request, rid: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={**SSE_HEADERS, "x-request-id": rid})
    with hung_up_is_cancelled():
        await response.prepare(request)
    return response


async def send_events(response: web.StreamResponse | None, events: list[bytes]) -> None:
    """Writes events that arrived together as one write (never delayed to batch more)."""
    assert response is not None
    if events:
        with hung_up_is_cancelled():
            await response.write(b"".join(events))


async def end_sse(response: web.StreamResponse | None, last: bytes = b"") -> None:
    assert response is not None
    with hung_up_is_cancelled():
        if last:
            await response.write(last)
        await response.write_eof()


__all__ = ["SSE_HEADERS", "end_sse", "hung_up_is_cancelled", "json_response", "open_sse", "send_events"]
