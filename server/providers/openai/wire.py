"""OpenAI's wire format, both directions: pure functions over dicts.

    chat_body(request, ...)        ProviderRequest -> /chat/completions body
    completion_body(request, ...)  ProviderRequest -> /completions body (raw completion)
    StreamTranslator.feed(event)   one SSE event's JSON -> Chunk (or None)
    error_from_body(...)           an error answer -> UpstreamError

Translation rules (docs/features.md has the table):
- system / user / assistant messages keep their roles; a user message that
  is one text part is a plain string, else a list of `text` and
  `image_url` parts (inline images become `data:` URLs); an assistant
  message's tool calls are its `tool_calls`; each tool result is one
  `role: tool` message. Reasoning parts of earlier turns are sent back as
  the assistant message's `reasoning_content` only where the upstream needs
  it (`reasoning_in_history`, on for the deepseek preset: its thinking mode
  answers 400 when an assistant turn that called tools comes back without
  it); OpenAI's Chat Completions API has no field for them.
- tools are `{"type": "function", "function": {...}}`; tool choice is
  "auto" / "none" / "required" or the named function; response formats are
  `json_object` and `json_schema` (`strict` as asked); reasoning effort is
  `reasoning_effort`, a token budget is refused (no such field).
- Streamed answers: `delta.content` is text, `delta.reasoning_content` (or
  `delta.reasoning`, vLLM/OpenRouter) is reasoning - returned only when
  asked for - and `delta.tool_calls[]` are argument fragments keyed by their
  `index`, the id arriving on the first. Each becomes a part delta with our
  own stable part index; every tool call delta repeats the call's id (made
  up when the vendor sent none) and name.
- Usage comes from the last chunk (`stream_options.include_usage`):
  prompt/completion tokens, `completion_tokens_details.reasoning_tokens`,
  `prompt_tokens_details.cached_tokens` (or DeepSeek's
  `prompt_cache_hit_tokens`).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from typing import Any

from aigc.v1 import content_pb2, generation_pb2, tool_pb2
from server.errors import UpstreamError, UpstreamFailure, error_body, failure_for_http_status
from server.providers.base import (
    Chunk,
    ProviderRequest,
    parts_of,
    result_images,
    result_text,
    retry_after_seconds,
)
from server.providers.vendor_params import merge, struct_to_dict

_FINISH = {
    "stop": generation_pb2.FINISH_REASON_STOP,
    "length": generation_pb2.FINISH_REASON_MAX_TOKENS,
    "content_filter": generation_pb2.FINISH_REASON_CONTENT_FILTER,
    "tool_calls": generation_pb2.FINISH_REASON_TOOL_CALLS,
    "function_call": generation_pb2.FINISH_REASON_TOOL_CALLS,
}
_ROLES = {
    content_pb2.ROLE_SYSTEM: "system",
    content_pb2.ROLE_USER: "user",
    content_pb2.ROLE_ASSISTANT: "assistant",
}
_TOOL_CHOICE = {
    tool_pb2.ToolChoice.MODE_AUTO: "auto",
    tool_pb2.ToolChoice.MODE_NONE: "none",
    tool_pb2.ToolChoice.MODE_REQUIRED: "required",
}
_EFFORT = {
    generation_pb2.ReasoningConfig.EFFORT_LOW: "low",
    generation_pb2.ReasoningConfig.EFFORT_MEDIUM: "medium",
    generation_pb2.ReasoningConfig.EFFORT_HIGH: "high",
}
# Error codes/types in OpenAI-style error bodies that say more than the status.
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error", "string_above_max_length"}
_FILTER_CODES = {"content_filter", "content_policy_violation", "data_inspection_failed"}
_RATE_CODES = {"rate_limit_exceeded", "rate_limit_error"}

#: Body keys the typed request controls (vendor_params may not set them).
#: `n_predict`, `json_schema` and `grammar` are llama.cpp's own names for the
#: token limit and output constraints.
RESERVED_KEYS = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "stream",
        "stream_options",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "n_predict",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "user",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "response_format",
        "json_schema",
        "grammar",
        "reasoning_effort",
    }
)


# --- requests -------------------------------------------------------------------------------


def chat_body(
    request: ProviderRequest, *, max_tokens_param: str = "max_tokens", reasoning_in_history: bool = False
) -> dict[str, Any]:
    """The /chat/completions streaming request body."""
    chat = request.chat
    assert chat is not None
    body: dict[str, Any] = {
        "model": request.upstream_model,
        "messages": messages(chat.messages, reasoning_in_history=reasoning_in_history),
    }
    if chat.tools:
        body["tools"] = [tool(t) for t in chat.tools]
        if chat.HasField("tool_choice"):
            body["tool_choice"] = tool_choice(chat.tool_choice)
    if chat.HasField("response_format"):
        fmt = response_format(chat.response_format)
        if fmt is not None:
            body["response_format"] = fmt
    if chat.reasoning.effort:
        body["reasoning_effort"] = _EFFORT[chat.reasoning.effort]
    _sampling(body, request, max_tokens_param)
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return merge(body, request.vendor_params)


def completion_body(request: ProviderRequest, *, max_tokens_param: str = "max_tokens") -> dict[str, Any]:
    """The legacy /completions streaming request body (a raw completion)."""
    body: dict[str, Any] = {"model": request.upstream_model, "prompt": request.prompt}
    # The legacy endpoint has only max_tokens, whatever the chat endpoint takes.
    del max_tokens_param
    _sampling(body, request, "max_tokens")
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return merge(body, request.vendor_params)


def _sampling(body: dict[str, Any], request: ProviderRequest, max_tokens_param: str) -> None:
    c = request.config
    if c.HasField("max_output_tokens"):
        body[max_tokens_param] = c.max_output_tokens
    if c.HasField("temperature"):
        body["temperature"] = c.temperature
    if c.HasField("top_p"):
        body["top_p"] = c.top_p
    if c.HasField("seed"):
        body["seed"] = c.seed
    if c.HasField("presence_penalty"):
        body["presence_penalty"] = c.presence_penalty
    if c.HasField("frequency_penalty"):
        body["frequency_penalty"] = c.frequency_penalty
    if c.stop_sequences:
        body["stop"] = list(c.stop_sequences)
    if request.user_id:
        body["user"] = request.user_id


def messages(conversation: Any, *, reasoning_in_history: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # Images tool results returned: tool messages take text only, so they follow as
    # one user message after the last tool message of the turn.
    shown: list[dict[str, Any]] = []
    for message in conversation:
        parts = parts_of(message)
        if message.role == content_pb2.ROLE_TOOL:
            for part in parts:
                result = part.tool_result
                out.append(
                    {"role": "tool", "tool_call_id": result.tool_call_id, "content": result_text(result)}
                )
                images = result_images(result)
                if images:
                    shown.append(
                        {"type": "text", "text": f"The images tool call {result.tool_call_id} returned:"}
                    )
                    shown += [{"type": "image_url", "image_url": {"url": image_url(i)}} for i in images]
            continue
        if shown:
            out.append({"role": "user", "content": shown})
            shown = []
        role = _ROLES[message.role]
        if message.role == content_pb2.ROLE_ASSISTANT:
            out.append(_assistant(parts, reasoning_in_history))
        elif message.role == content_pb2.ROLE_USER and any(p.WhichOneof("data") == "image" for p in parts):
            out.append({"role": role, "content": [_content_part(p) for p in parts]})
        else:
            out.append({"role": role, "content": "".join(p.text for p in parts)})
    if shown:
        out.append({"role": "user", "content": shown})
    return out


def _assistant(parts: Any, reasoning_in_history: bool = False) -> dict[str, Any]:
    text = "".join(p.text for p in parts if p.WhichOneof("data") == "text")
    reasoning = "".join(p.reasoning.text for p in parts if p.WhichOneof("data") == "reasoning")
    calls = [
        {
            "id": p.tool_call.id,
            "type": "function",
            "function": {"name": p.tool_call.name, "arguments": p.tool_call.arguments or "{}"},
        }
        for p in parts
        if p.WhichOneof("data") == "tool_call"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if reasoning and reasoning_in_history:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return message


def _content_part(part: content_pb2.Part) -> dict[str, Any]:
    if part.WhichOneof("data") == "text":
        return {"type": "text", "text": part.text}
    return {"type": "image_url", "image_url": {"url": image_url(part.image)}}


def image_url(image: content_pb2.Image) -> str:
    """An image as OpenAI's `image_url.url`: the URI as given, inline bytes as a data: URL."""
    if image.WhichOneof("source") == "uri":
        return image.uri
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode()}"


def tool(declaration: tool_pb2.Tool) -> dict[str, Any]:
    function = declaration.function
    out: dict[str, Any] = {"name": function.name}
    if function.description:
        out["description"] = function.description
    out["parameters"] = (
        struct_to_dict(function.parameters)
        if function.HasField("parameters")
        else {"type": "object", "properties": {}}
    )
    return {"type": "function", "function": out}


def tool_choice(choice: tool_pb2.ToolChoice) -> Any:
    if choice.function_name:
        return {"type": "function", "function": {"name": choice.function_name}}
    return _TOOL_CHOICE.get(choice.mode, "auto")


def response_format(fmt: generation_pb2.ResponseFormat) -> dict[str, Any] | None:
    if fmt.type == generation_pb2.ResponseFormat.TYPE_JSON:
        return {"type": "json_object"}
    if fmt.type == generation_pb2.ResponseFormat.TYPE_JSON_SCHEMA:
        schema = {"name": fmt.name or "response", "schema": struct_to_dict(fmt.schema)}
        if fmt.strict:
            schema["strict"] = True
        return {"type": "json_schema", "json_schema": schema}
    return None


# --- streamed answers ---------------------------------------------------------------------------


class StreamTranslator:
    """Turns one answer's SSE events into Chunks, keeping the part indexes stable.

    `feed` takes each event's decoded JSON (not `[DONE]`) and returns a Chunk
    or None (nothing of ours in it, e.g. the role-only first chunk). Raises
    KeyError/TypeError/AttributeError/IndexError on a chunk of the wrong
    shape; the provider reports those as MALFORMED_RESPONSE.
    """

    def __init__(self, *, include_reasoning: bool = False) -> None:
        self.include_reasoning = include_reasoning
        self.finished = False
        self._next_index = 0
        # Kind and our index of the last text/reasoning part, so a run of
        # deltas extends one part and a change of kind starts a new one.
        self._open_kind = ""
        self._open_index = -1
        # OpenAI's tool call index -> (our part index, id, name).
        self._calls: dict[int, tuple[int, str, str]] = {}

    def feed(self, event: Mapping[str, Any]) -> Chunk | None:
        choices = event.get("choices") or ()
        parts: list[content_pb2.Part] = []
        finish = 0
        if choices:
            choice = choices[0]
            if "text" in choice:  # a legacy /completions chunk
                text = choice["text"]
                if text:
                    parts.append(self._text("text", text))
            else:
                self._delta(choice.get("delta") or {}, parts)
            reason = choice.get("finish_reason")
            if reason:
                finish = _FINISH.get(reason, generation_pb2.FINISH_REASON_OTHER)
                self.finished = True
        usage = usage_of(event.get("usage"))
        if not parts and not finish and usage is None:
            return None
        return Chunk(parts=parts, finish=finish, usage=usage, response_id=event.get("id") or "")

    def _delta(self, delta: Mapping[str, Any], parts: list[content_pb2.Part]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and self.include_reasoning:
            if not isinstance(reasoning, str):
                raise TypeError(f"reasoning is {type(reasoning).__name__}")
            parts.append(self._text("reasoning", reasoning))
        content = delta.get("content")
        if content:
            if not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}")
            parts.append(self._text("text", content))
        for call in delta.get("tool_calls") or ():
            parts.append(self._tool_call(call))

    def _text(self, kind: str, text: str) -> content_pb2.Part:
        if self._open_kind != kind:
            self._open_kind, self._open_index = kind, self._new_index()
        if kind == "text":
            return content_pb2.Part(index=self._open_index, text=text)
        return content_pb2.Part(index=self._open_index, reasoning=content_pb2.Reasoning(text=text))

    def _tool_call(self, call: Mapping[str, Any]) -> content_pb2.Part:
        self._open_kind = ""  # text after a tool call is a new part
        key = int(call.get("index", len(self._calls)))
        function = call.get("function") or {}
        known = self._calls.get(key)
        if known is None:
            known = (
                self._new_index(),
                call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                function.get("name") or "",
            )
            self._calls[key] = known
        elif not known[2] and function.get("name"):
            known = (known[0], known[1], function["name"])
            self._calls[key] = known
        index, call_id, name = known
        arguments = function.get("arguments") or ""
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)  # a server sending an object
        return content_pb2.Part(
            index=index, tool_call=content_pb2.ToolCall(id=call_id, name=name, arguments=arguments)
        )

    def _new_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index


def usage_of(usage: Mapping[str, Any] | None) -> generation_pb2.Usage | None:
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    out = generation_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if reasoning is not None:
        out.reasoning_tokens = int(reasoning)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached is None:
        cached = usage.get("prompt_cache_hit_tokens")  # DeepSeek
    if cached is not None:
        out.cached_prompt_tokens = int(cached)
    return out


# --- errors --------------------------------------------------------------------------------------


def error_from_response(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...]
) -> UpstreamError:
    """An error answer (or a 200 that is not an event stream) as UpstreamError."""
    request_id = headers.get("x-request-id")
    parsed = error_body(body)
    if status == 200:
        if isinstance(parsed, Mapping) and "error" in parsed:  # a vendor sending errors with 200
            return stream_error(provider, parsed, request_id, secrets)
        return UpstreamError(
            UpstreamFailure.MALFORMED_RESPONSE,
            f"expected an event stream, got {headers.get('content-type')!r}",
            provider=provider,
            upstream_request_id=request_id,
            secrets=secrets,
        )
    code = _error_code(parsed)
    if code in _CONTEXT_CODES:
        failure = UpstreamFailure.CONTEXT_TOO_LONG
    elif code in _FILTER_CODES:
        failure = UpstreamFailure.CONTENT_FILTERED
    else:
        failure = failure_for_http_status(status)
    return UpstreamError(
        failure,
        _error_message(status, parsed, body),
        provider=provider,
        upstream_status=status,
        upstream_request_id=request_id,
        retry_after_seconds=retry_after_seconds(headers.get("retry-after")),
        secrets=secrets,
    )


def stream_error(
    provider: str, event: Mapping[str, Any], request_id: str | None, secrets: tuple[str, ...]
) -> UpstreamError:
    """An `{"error": {...}}` object inside a 200 stream."""
    code = _error_code(event)
    if code in _CONTEXT_CODES:
        failure = UpstreamFailure.CONTEXT_TOO_LONG
    elif code in _FILTER_CODES:
        failure = UpstreamFailure.CONTENT_FILTERED
    elif code in _RATE_CODES:
        failure = UpstreamFailure.RATE_LIMITED
    else:
        failure = UpstreamFailure.SERVER_ERROR
    error = event.get("error")
    message = error.get("message") if isinstance(error, Mapping) else error
    return UpstreamError(
        failure,
        f"error in stream: {message}",
        provider=provider,
        upstream_request_id=request_id,
        secrets=secrets,
    )


def _error_code(body: object) -> str:
    """The `code` or `type` of an OpenAI-style error body, lower-cased."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            for key in ("code", "type"):
                value = inner.get(key)
                if isinstance(value, str) and value:
                    return value.lower()
    return ""


def _error_message(status: int, parsed: Any, body: bytes) -> str:
    if isinstance(parsed, Mapping):
        inner = parsed.get("error", parsed)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return f"HTTP {status}: {inner['message']}"
    text = body.decode("utf-8", "replace").strip()
    return f"HTTP {status}: {text[:500]}" if text else f"HTTP {status}"


__all__ = [
    "RESERVED_KEYS",
    "StreamTranslator",
    "chat_body",
    "completion_body",
    "error_from_response",
    "image_url",
    "messages",
    "response_format",
    "stream_error",
    "tool",
    "tool_choice",
    "usage_of",
]
