"""OpenAI's wire format: chat/completions and completions bodies, SSE chunks,
the usage chunk with empty `choices`, `data: [DONE]`, and error bodies.

`chat()` and `completion()` answer like OpenAI: as SSE when the request says
`"stream": true`, else as one JSON body. `Embeddings()` answers POST
/embeddings from the request's own inputs."""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from collections.abc import Mapping
from typing import Any

from tests.fakes.http import ByRequest, Checked, Connection, FakeServer, Recorded, Reply, Respond, Stream

DONE = b"data: [DONE]\n\n"
CREATED = 1_764_000_000


def event(obj: Any) -> bytes:
    """One SSE event as OpenAI sends it (raw UTF-8, no `event:` line)."""
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def chat(
    text: str, *, finish: str = "stop", usage: tuple[int, int] | None = (5, 7), id: str = "chatcmpl-1"
) -> ByRequest:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = _usage(*usage)
    unary = Respond(200, body, {"x-request-id": "req-unary"})
    return ByRequest(unary, stream(chat_events([text], finish=finish, usage=usage, id=id)), _wants_stream)


def completion(text: str, *, finish: str = "stop", usage: tuple[int, int] = (3, 4)) -> ByRequest:
    body = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": CREATED,
        "model": "gpt-fake",
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        "usage": _usage(*usage),
    }
    streamed = stream(completion_events([text], finish=finish, usage=usage, id="cmpl-1"))
    return ByRequest(Respond(200, body), streamed, _wants_stream)


def chat_events(
    pieces: list[str],
    *,
    finish: str | None = "stop",
    usage: tuple[int, int] | None = (5, 7),
    id: str = "chatcmpl-s",
) -> list[bytes]:
    """The SSE events of a streamed chat answer, one per piece, then finish, usage and [DONE]."""

    def chunk(delta: Mapping[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "gpt-fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    events = [event(chunk({"role": "assistant", "content": ""}, None))]
    events += [event(chunk({"content": piece}, None)) for piece in pieces]
    if finish is not None:
        events.append(event(chunk({}, finish)))
    if usage is not None:
        events.append(
            event(
                {
                    "id": id,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": "gpt-fake",
                    "choices": [],
                    "usage": _usage(*usage),
                }
            )
        )
    events.append(DONE)
    return events


def delta_events(
    deltas: list[dict[str, Any]],
    *,
    finish: str | None = "stop",
    usage: dict[str, Any] | None = None,
    id: str = "chatcmpl-s",
) -> list[bytes]:
    """Any sequence of `delta` objects (content, reasoning_content, tool_calls ...),
    then the finish chunk, the usage chunk (raw usage object) and [DONE]."""

    def chunk(delta: Mapping[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "gpt-fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    events = [event(chunk({"role": "assistant", "content": None}, None))]
    events += [event(chunk(delta, None)) for delta in deltas]
    if finish is not None:
        events.append(event(chunk({}, finish)))
    if usage is not None:
        events.append(
            event(
                {
                    "id": id,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": "gpt-fake",
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    events.append(DONE)
    return events


def tool_call_delta(
    index: int, *, id: str | None = None, name: str | None = None, arguments: str = ""
) -> dict:
    """One `delta.tool_calls` entry as OpenAI streams it: id, type and name only on the first."""
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    if name is not None:
        call["function"]["name"] = name
    return {"tool_calls": [call]}


def usage_object(
    prompt: int, completion: int, *, reasoning: int | None = None, cached: int | None = None
) -> dict[str, Any]:
    usage: dict[str, Any] = _usage(prompt, completion)
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def completion_events(
    pieces: list[str], *, finish: str = "stop", usage: tuple[int, int] = (3, 4), id: str = "cmpl-s"
) -> list[bytes]:
    def chunk(text: str, finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": "gpt-fake",
            "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
        }

    events = [event(chunk(piece, None)) for piece in pieces]
    events.append(event(chunk("", finish)))
    events.append(
        event(
            {
                "id": id,
                "object": "text_completion",
                "created": CREATED,
                "model": "gpt-fake",
                "choices": [],
                "usage": _usage(*usage),
            }
        )
    )
    return [*events, DONE]


def stream(events: list[bytes], **options: Any) -> Stream:
    return Stream(events, headers={"x-request-id": "req-stream"}, **options)


def error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Respond:
    """An error response as OpenAI sends it, with its `x-request-id` header."""
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return Respond(status, body, {"x-request-id": f"req-{status}", **(headers or {})})


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _wants_stream(request: Recorded) -> bool:
    return request.json().get("stream") is True


# DeepSeek's thinking mode (deepseek-reasoner, deepseek-v4-* with thinking on)
# refuses a conversation whose assistant tool-call turns lost their
# reasoning: it needs `reasoning_content` back on every assistant message that
# called tools (api-docs.deepseek.com/guides/thinking_mode, "Tool calls").
# The exact answer, as recorded from api.deepseek.com:
DEEPSEEK_REASONING_MISSING = Respond(
    400,
    {
        "error": {
            "message": "The `reasoning_content` in the thinking mode must be passed back to the API.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_request_error",
        }
    },
)


def deepseek_thinking_check(request: Recorded) -> Respond | None:
    """DeepSeek's 400 when an assistant message with tool calls has no `reasoning_content`."""
    for message in request.json().get("messages", ()):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            if not message.get("reasoning_content"):
                return DEEPSEEK_REASONING_MISSING
    return None


def as_deepseek_thinking(reply: Reply) -> Checked:
    """`reply`, from a fake configured as DeepSeek in thinking mode (see deepseek_thinking_check)."""
    return Checked(deepseek_thinking_check, reply)


# --- embeddings ---------------------------------------------------------------------------------


def vector_for(text: str) -> list[float]:
    """The vector the fake gives `text`: its length and its last character's code point,
    so a test can tell every input's vector apart and check their order."""
    return [float(len(text)), float(ord(text[-1])), 0.5]


def tokens_for(texts: list[str]) -> int:
    """The prompt_tokens the fake reports for `texts` (one per character)."""
    return sum(len(text) for text in texts)


@dataclasses.dataclass
class Embeddings(Reply):
    """POST /embeddings as OpenAI answers it, computed from the request: one
    `{"object": "embedding", "index": i, "embedding": ...}` per input, floats
    or - with `encoding_format: "base64"` - little-endian float32 bytes in
    base64, and usage. More than `max_inputs` texts get the vendor's 400
    (OpenAI takes 2048; DashScope's compatible mode 10)."""

    max_inputs: int = 2048
    model: str = "text-embedding-3-small"

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        request = server.requests[-1].json()
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        if len(texts) > self.max_inputs:
            message = f"batch size is invalid, it should not be larger than {self.max_inputs}."
            return await error(400, message, code="InvalidParameter").send(conn, server)
        data = []
        for i, text in enumerate(texts):
            vector = vector_for(text)[: request.get("dimensions", 3)]
            value: Any = vector
            if request.get("encoding_format") == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = tokens_for(texts)
        body = {
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return await Respond(200, body, {"x-request-id": "req-embed"}).send(conn, server)
