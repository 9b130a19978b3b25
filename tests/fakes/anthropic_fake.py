"""Anthropic's Messages API wire format: message bodies, SSE with `event:`
lines (message_start, content_block_*, ping, message_delta, message_stop,
error), error bodies, and the `request-id` header.

`message()` answers like Anthropic: as SSE when the request says
`"stream": true`, else as one JSON body. `message_events()` is a plain text
answer; `answer()` assembles any other from blocks:

    answer([thinking_block(0, ["Let me see"], "sig"), tool_use_block(1, "toolu_1", "f", ['{"a"', ": 1}"])],
           stop_reason="tool_use", usage=usage_object(20, 9, cache_read=12, thinking=5))

Blocks stream one after another, as Anthropic sends them: each block's
start, deltas and stop before the next block starts (parallel tool calls
are tool_use blocks back to back)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from tests.fakes.http import ByRequest, Checked, Recorded, Reply, Respond, Stream

# Usage fields message_start carries; message_delta carries the output counts.
_INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


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
    """A streamed text answer, event by event, as Anthropic sends it:
    message_start, content_block_start, ping, one delta per piece,
    content_block_stop, message_delta, message_stop."""
    return [
        message_start(usage_object(usage[0], usage[1], cache_read=cache_read, cache_write=0)),
        *text_block(0, pieces),
        *message_end(stop_reason, {"output_tokens": usage[1]}),
    ]


# --- building blocks ------------------------------------------------------------------------


def usage_object(
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read: int | None = None,
    cache_write: int | None = None,
    thinking: int | None = None,
) -> dict[str, Any]:
    """A `usage` object; the cache and thinking counts only when given (absent, not zero)."""
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cache_write is not None:
        usage["cache_creation_input_tokens"] = cache_write
    if cache_read is not None:
        usage["cache_read_input_tokens"] = cache_read
    if thinking is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    return usage


def message_start(usage: Mapping[str, Any] | None, *, id: str = "msg_stream") -> bytes:
    """message_start with the input side of `usage` (output_tokens 1, as Anthropic sends)."""
    message: dict[str, Any] = {
        "id": id,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-fake",
        "stop_reason": None,
        "stop_sequence": None,
    }
    if usage is not None:
        message["usage"] = {**{k: usage[k] for k in _INPUT_FIELDS if k in usage}, "output_tokens": 1}
    return event("message_start", {"type": "message_start", "message": message})


def message_end(stop_reason: str, usage: Mapping[str, Any] | None) -> list[bytes]:
    """message_delta (stop reason, the usage given) and message_stop."""
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
    }
    if usage is not None:
        delta["usage"] = dict(usage)
    return [event("message_delta", delta), event("message_stop", {"type": "message_stop"})]


def block_start(index: int, block: Mapping[str, Any]) -> bytes:
    return event(
        "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
    )


def block_delta(index: int, delta: Mapping[str, Any]) -> bytes:
    return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> bytes:
    return event("content_block_stop", {"type": "content_block_stop", "index": index})


def ping() -> bytes:
    return event("ping", {"type": "ping"})


def text_block(index: int, pieces: Sequence[str], *, with_ping: bool = True) -> list[bytes]:
    """A text block: start, (a ping, as Anthropic sends after the first start), deltas, stop."""
    events = [block_start(index, {"type": "text", "text": ""})]
    if with_ping:
        events.append(ping())
    events += [block_delta(index, {"type": "text_delta", "text": p}) for p in pieces]
    return [*events, block_stop(index)]


def tool_use_block(index: int, id: str, name: str, fragments: Sequence[str]) -> list[bytes]:
    """A tool_use block: `input` {} at the start, the arguments as input_json_delta fragments.

    No fragments is a call without arguments (Anthropic then sends none, or one empty one)."""
    start = block_start(index, {"type": "tool_use", "id": id, "name": name, "input": {}})
    deltas = [block_delta(index, {"type": "input_json_delta", "partial_json": f}) for f in fragments]
    return [start, *deltas, block_stop(index)]


def thinking_block(index: int, pieces: Sequence[str], signature: str) -> list[bytes]:
    """A thinking block: thinking_delta pieces, then the signature whole, just before the stop.

    No pieces is what `display: "omitted"` gives: a signature only."""
    start = block_start(index, {"type": "thinking", "thinking": "", "signature": ""})
    deltas = [block_delta(index, {"type": "thinking_delta", "thinking": p}) for p in pieces]
    if signature:
        deltas.append(block_delta(index, {"type": "signature_delta", "signature": signature}))
    return [start, *deltas, block_stop(index)]


def redacted_thinking_block(index: int, data: str) -> list[bytes]:
    """Thinking the safety systems encrypted: the whole `data` in the start, no deltas."""
    return [block_start(index, {"type": "redacted_thinking", "data": data}), block_stop(index)]


def answer(
    blocks: Sequence[Sequence[bytes]],
    *,
    stop_reason: str = "end_turn",
    usage: Mapping[str, Any] | None = None,
    cumulative: bool = False,
) -> list[bytes]:
    """A whole streamed answer: message_start, ping, the blocks, message_delta, message_stop.

    `usage` (see usage_object) is split as Anthropic does: input and cache
    counts on message_start, output counts on message_delta - or, with
    `cumulative`, every count again on message_delta (the current API's
    cumulative totals)."""
    end_usage: dict[str, Any] | None = None
    if usage is not None:
        end_usage = dict(usage) if cumulative else {k: v for k, v in usage.items() if k not in _INPUT_FIELDS}
    events = [message_start(usage), ping()]
    for block in blocks:
        events += block
    return [*events, *message_end(stop_reason, end_usage)]


def error_event(type: str, message: str) -> bytes:
    return event("error", {"type": "error", "error": {"type": type, "message": message}})


def stream(events: list[bytes], **options: Any) -> Stream:
    return Stream(events, headers={"request-id": "req_stream", "cache-control": "no-cache"}, **options)


def error(status: int, type: str, message: str, *, headers: Mapping[str, str] | None = None) -> Respond:
    body = {"type": "error", "error": {"type": type, "message": message}, "request_id": f"req_{status}"}
    return Respond(status, body, {"request-id": f"req_{status}", **(headers or {})})


# The API's words when a tool loop's last assistant turn lost its thinking block.
_NO_THINKING_FIRST = (
    "messages.{}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{}`. "
    "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
    "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you "
    "include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. "
    "Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


def thinking_check(issued: Collection[str]) -> Callable[[Recorded], Respond | None]:
    """What the Messages API checks of a conversation with thinking on, as a Checked rule.

    The last assistant message of a tool loop (the one before the latest
    tool_result turn) must start with a thinking or redacted_thinking block,
    and every thinking block's signature must be one the API issued
    (`issued`: the fake's own): otherwise the API's 400s, word for word.
    """

    def check(request: Recorded) -> Respond | None:
        body = request.json()
        if (body.get("thinking") or {}).get("type") not in ("enabled", "adaptive"):
            return None
        messages = body.get("messages") or []
        for i, message in enumerate(messages):
            for j, block in enumerate(_blocks(message)):
                if block.get("type") == "thinking" and block.get("signature") not in issued:
                    return error(
                        400,
                        "invalid_request_error",
                        f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block",
                    )
        tool_turns = [
            i
            for i, m in enumerate(messages)
            if m.get("role") == "assistant" and any(b.get("type") == "tool_use" for b in _blocks(m))
        ]
        if tool_turns:
            last = tool_turns[-1]
            first = (_blocks(messages[last]) or [{}])[0]
            if first.get("type") not in ("thinking", "redacted_thinking"):
                return error(400, "invalid_request_error", _NO_THINKING_FIRST.format(last, first.get("type")))
        return None

    return check


def _blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def with_thinking_checked(reply: Reply, issued: Collection[str]) -> Checked:
    """`reply`, unless the request breaks thinking_check's rules."""
    return Checked(thinking_check(issued), reply)
