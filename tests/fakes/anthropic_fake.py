"""Anthropic's Messages API wire format: message bodies, SSE with `event:`
lines (message_start, content_block_*, ping, message_delta, message_stop,
error), error bodies, and the `request-id` header.

`message()` answers like Anthropic: as SSE when the request says
`"stream": true`, else as one JSON body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tests.fakes.http import ByRequest, Respond, Stream


def event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def message(
    text: str, *, stop_reason: str = "end_turn", usage: tuple[int, int] = (12, 5), cache_read: int = 0
) -> ByRequest:
    body = {
        "id": "msg_unary",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cache_read,
        },
    }
    unary = Respond(200, body, {"request-id": "req_unary"})
    streamed = stream(message_events([text], stop_reason=stop_reason, usage=usage, cache_read=cache_read))
    return ByRequest(unary, streamed, lambda request: request.json().get("stream") is True)


def message_events(
    pieces: list[str],
    *,
    stop_reason: str = "end_turn",
    usage: tuple[int, int] = (25, 15),
    cache_read: int = 0,
) -> list[bytes]:
    """A streamed answer, event by event, as Anthropic sends it (including a ping)."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_stream",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-fake",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": cache_read},
        },
    }  # fmt: skip
    events = [
        event("message_start", start),
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}),
        event("ping", {"type": "ping"}),
    ]  # fmt: skip
    events += [
        event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": piece}})
        for piece in pieces
    ]  # fmt: skip
    events += [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                "usage": {"output_tokens": usage[1]}}),
        event("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return events


def error_event(type: str, message: str) -> bytes:
    return event("error", {"type": "error", "error": {"type": type, "message": message}})


def stream(events: list[bytes], **options: Any) -> Stream:
    return Stream(events, headers={"request-id": "req_stream", "cache-control": "no-cache"}, **options)


def error(status: int, type: str, message: str, *, headers: Mapping[str, str] | None = None) -> Respond:
    body = {"type": "error", "error": {"type": type, "message": message}, "request_id": f"req_{status}"}
    return Respond(status, body, {"request-id": f"req_{status}", **(headers or {})})
