"""Anthropic's Messages API JSON <-> aigc.v1, as pure functions (the door's side).

The Anthropic door (server/api/anthropic_door/app.py) serves `POST
/anthropic/v1/messages` for code written against the Anthropic SDKs (Claude
Code, LangChain's ChatAnthropic, ...): a request becomes an aigc.v1
ChatRequest for the same engine as every other call, and the answer comes
back in Anthropic's shapes - whichever provider served it. Dicts in, dicts
out (tests/server/api/anthropic_door/test_wire.py, and the official SDK in
tests/e2e/test_anthropic_door_e2e.py).

Translation (where it differs from Anthropic: README, "The doors"):
- `system` (a string or text blocks) is one ROLE_SYSTEM message; user
  messages carry text and image blocks (`base64` and `url` sources); their
  `tool_result` blocks become one ROLE_TOOL message before the user's own
  parts, as the typed API wants results right after the calls.
- Assistant blocks: text, `tool_use` (input -> JSON arguments), `thinking`
  {thinking, signature} and `redacted_thinking` {data} -> reasoning parts,
  sent back to the provider unchanged (it checks the signature).
- A signature on a tool call (Gemini's `thoughtSignature` on a function
  call: Gemini refuses the next turn without it) has no field in
  `tool_use`, so it rides in the block's id (server/api/part_order.py); the
  caller echoes the id in `tool_use_id`, and both are split again here.
  Anthropic's own signatures are on thinking blocks.
- `thinking` {type: enabled, budget_tokens} asks for reasoning with that
  budget; {type: adaptive} asks for it at medium effort; disabled or absent
  asks for none.
- `cache_control` marks are accepted and not passed on (the typed API has
  no cache breakpoints; Anthropic-backed models are cached as configured);
  `top_k`, documents, server tools (web search, code execution), citations,
  `container` and `mcp_servers` cannot be expressed and are refused with 400.
- Errors are Anthropic's {type: error, error: {type, message}} with our
  ErrorInfo reason added as `error.reason` and the request id as `request_id`.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2, tool_pb2
from server.api.part_order import PartOrder, signed_id, split_signature
from server.api.structs import parse_struct
from server.core.validation import Violations
from server.errors import InvalidRequest, status_facts

Json = dict[str, Any]

_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    # Accepted and without effect here: they change nothing in the answer.
    "service_tier",
}
_UNSUPPORTED = {
    "top_k": "top_k cannot be expressed on every provider and is not offered",
    "container": "code execution containers are not offered",
    "mcp_servers": "MCP servers are not offered",
    "context_management": "context management is not offered",
}
_STOP = {
    generation_pb2.FINISH_REASON_STOP: "end_turn",
    generation_pb2.FINISH_REASON_MAX_TOKENS: "max_tokens",
    generation_pb2.FINISH_REASON_TOOL_CALLS: "tool_use",
    generation_pb2.FINISH_REASON_CONTENT_FILTER: "refusal",
    generation_pb2.FINISH_REASON_OTHER: "end_turn",
}
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


# --- requests -----------------------------------------------------------------------------


def messages_request(body: Any) -> tuple[aigc_service_pb2.ChatRequest, bool]:
    """(the ChatRequest, stream?) from a /v1/messages body; InvalidRequest names every problem."""
    if not isinstance(body, dict):
        raise InvalidRequest({"body": "must be a JSON object"})
    problems = Violations()
    for name, value in body.items():
        if name in _UNSUPPORTED:
            if value not in (None, [], {}):
                problems.add(name, _UNSUPPORTED[name])
        elif name not in _FIELDS:
            problems.add(name, "Extra inputs are not permitted")
    request = aigc_service_pb2.ChatRequest()
    model = body.get("model")
    if not isinstance(model, str) or not model:
        problems.add("model", "is required: a string")
    else:
        request.model = model
    max_tokens = body.get("max_tokens")
    if not _whole(max_tokens) or max_tokens < 1:
        problems.add("max_tokens", "is required: a whole number of at least 1")
    else:
        request.generation_config.max_output_tokens = min(max_tokens, 2**31 - 1)
    _system(body.get("system"), request, problems)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.add("messages", "must be a non-empty array")
    else:
        for i, message in enumerate(messages):
            request.messages.extend(_message(message, f"messages.{i}", problems))
    _sampling(body, request.generation_config, problems)
    metadata = body.get("metadata")
    if metadata is not None:
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
        if not isinstance(metadata, dict) or (user is not None and not isinstance(user, str)):
            problems.add("metadata", "must be an object with an optional string user_id")
        elif user:
            request.user_id = user
    _tools(body, request, problems)
    _thinking(body.get("thinking"), request, problems)
    stream = body.get("stream")
    if stream not in (None, True, False):
        problems.add("stream", "must be a boolean")
    problems.raise_if_any()
    return request, stream is True


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _system(system: Any, request: aigc_service_pb2.ChatRequest, problems: Violations) -> None:
    if system is None:
        return
    if isinstance(system, str):
        text = system
    elif isinstance(system, list):
        texts = []
        for j, block in enumerate(system):
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            else:
                problems.add(f"system.{j}", "only text blocks are allowed in system")
        text = "\n\n".join(texts)
    else:
        problems.add("system", "must be a string or an array of text blocks")
        return
    if text:
        request.messages.append(content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=text))


def _message(message: Any, where: str, problems: Violations) -> list[content_pb2.Message]:
    if not isinstance(message, dict):
        problems.add(where, "must be an object")
        return []
    role = message.get("role")
    if role not in ("user", "assistant"):
        problems.add(f"{where}.role", "must be user or assistant")
        return []
    for name in sorted(set(message) - {"role", "content"}):
        problems.add(f"{where}.{name}", "Extra inputs are not permitted")
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        problems.add(f"{where}.content", "must be a string or an array of content blocks")
        return []
    if role == "assistant":
        out = content_pb2.Message(role=content_pb2.ROLE_ASSISTANT)
        for j, block in enumerate(content):
            part = _assistant_block(block, f"{where}.content.{j}", problems)
            if part is not None:
                out.parts.append(part)
        return [out]
    results = content_pb2.Message(role=content_pb2.ROLE_TOOL)
    user = content_pb2.Message(role=content_pb2.ROLE_USER)
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        if isinstance(block, dict) and block.get("type") == "tool_result":
            result = _tool_result(block, at, problems)
            if result is not None:
                results.parts.append(content_pb2.Part(tool_result=result))
        else:
            part = _user_block(block, at, problems)
            if part is not None:
                user.parts.append(part)
    return [m for m in (results, user) if m.parts]


def _user_block(block: Any, where: str, problems: Violations) -> content_pb2.Part | None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text" and isinstance(block.get("text"), str):
        return content_pb2.Part(text=block["text"])
    if kind == "image":
        image = _image(block.get("source"), f"{where}.source", problems)
        return content_pb2.Part(image=image) if image is not None else None
    problems.add(f"{where}.type", "text, image or tool_result (documents and server tools are not offered)")
    return None


def _image(source: Any, where: str, problems: Violations) -> content_pb2.Image | None:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if media not in _IMAGE_TYPES:
            problems.add(f"{where}.media_type", f"one of {', '.join(_IMAGE_TYPES)}")
            return None
        try:
            raw = base64.b64decode(data, validate=True) if isinstance(data, str) else None
        except ValueError:
            raw = None
        if not raw:
            problems.add(f"{where}.data", "must be the image's bytes in base64")
            return None
        return content_pb2.Image(mime_type=media, data=raw)
    if kind == "url" and isinstance(source.get("url"), str) and source["url"]:
        return content_pb2.Image(uri=source["url"])
    problems.add(where, "a base64 or url image source (file ids are not offered)")
    return None


def _tool_result(block: Mapping[str, Any], where: str, problems: Violations) -> content_pb2.ToolResult | None:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        problems.add(f"{where}.tool_use_id", "is required")
        return None
    result = content_pb2.ToolResult(
        tool_call_id=split_signature(call_id)[0], is_error=block.get("is_error") is True
    )
    content = block.get("content", "")
    if isinstance(content, str):
        result.content = content
    elif isinstance(content, list):
        for j, inner in enumerate(content):
            kind = inner.get("type") if isinstance(inner, dict) else None
            if kind == "text" and isinstance(inner.get("text"), str):
                result.parts.add(text=inner["text"])
            elif kind == "image":
                image = _image(inner.get("source"), f"{where}.content.{j}.source", problems)
                if image is not None:
                    result.parts.add(image=image)
            else:
                problems.add(f"{where}.content.{j}", "text or image blocks (documents are not offered)")
    else:
        problems.add(f"{where}.content", "must be a string or an array of text and image blocks")
        return None
    return result


def _assistant_block(block: Any, where: str, problems: Violations) -> content_pb2.Part | None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text" and isinstance(block.get("text"), str):
        return content_pb2.Part(text=block["text"])
    if kind == "tool_use":
        call_id, name, given = block.get("id"), block.get("name"), block.get("input", {})
        if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(given, dict):
            problems.add(where, "a tool_use block needs a string id and name and an object input")
            return None
        plain_id, signature = split_signature(call_id)
        arguments = json.dumps(given, ensure_ascii=False, separators=(",", ":")) if given else ""
        return content_pb2.Part(
            tool_call=content_pb2.ToolCall(id=plain_id, name=name, arguments=arguments), signature=signature
        )
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        signature = block.get("signature", "")
        return content_pb2.Part(
            reasoning=content_pb2.Reasoning(text=block["thinking"]),
            signature=signature if isinstance(signature, str) else "",
        )
    if kind == "redacted_thinking" and isinstance(block.get("data"), str):
        return content_pb2.Part(reasoning=content_pb2.Reasoning(encrypted_content=block["data"]))
    problems.add(f"{where}.type", "text, tool_use, thinking or redacted_thinking")
    return None


def _sampling(body: Mapping[str, Any], config: generation_pb2.GenerationConfig, problems: Violations) -> None:
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problems.add(name, "must be a number")
        else:
            setattr(config, name, float(value))
    stops = body.get("stop_sequences")
    if stops is not None:
        if isinstance(stops, list) and all(isinstance(s, str) for s in stops):
            config.stop_sequences.extend(stops)
        else:
            problems.add("stop_sequences", "must be an array of strings")


def _tools(body: Mapping[str, Any], request: aigc_service_pb2.ChatRequest, problems: Violations) -> None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        problems.add("tools", "must be an array")
        tools = None
    for i, tool in enumerate(tools or ()):
        kind = tool.get("type", "custom") if isinstance(tool, dict) else None
        name = tool.get("name") if isinstance(tool, dict) else None
        if kind != "custom" or not isinstance(name, str):
            problems.add(f"tools.{i}", "only custom tools {name, description, input_schema} are offered")
            continue
        declaration = tool_pb2.FunctionDeclaration(name=name)
        description = tool.get("description")
        if isinstance(description, str):
            declaration.description = description
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            problems.add(f"tools.{i}.input_schema", "is required: a JSON Schema object")
            continue
        why = parse_struct(schema, declaration.parameters)
        if why:
            problems.add(f"tools.{i}.input_schema", why)
            continue
        request.tools.append(tool_pb2.Tool(function=declaration))
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    modes = {
        "auto": tool_pb2.ToolChoice.MODE_AUTO,
        "any": tool_pb2.ToolChoice.MODE_REQUIRED,
        "none": tool_pb2.ToolChoice.MODE_NONE,
    }
    if kind in modes:
        request.tool_choice.mode = modes[kind]
    elif kind == "tool" and isinstance(choice.get("name"), str):
        request.tool_choice.function_name = choice["name"]
    else:
        problems.add("tool_choice", "{type: auto | any | none} or {type: tool, name}")


def _thinking(thinking: Any, request: aigc_service_pb2.ChatRequest, problems: Violations) -> None:
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not _whole(budget) or budget < 1:
            problems.add("thinking.budget_tokens", "is required: a whole number")
            return
        request.reasoning.budget_tokens = budget
    elif kind == "adaptive":
        request.reasoning.effort = generation_pb2.ReasoningConfig.EFFORT_MEDIUM
    else:
        problems.add("thinking.type", "enabled, adaptive or disabled")
        return
    request.reasoning.include_reasoning = True


# --- answers ------------------------------------------------------------------------------


def stop_reason(finish: int) -> str | None:
    return _STOP.get(finish)


def usage(value: generation_pb2.Usage | None) -> Json:
    """Anthropic counts input tokens without the cached ones; ours include them."""
    if value is None:
        return {"input_tokens": 0, "output_tokens": 0}
    cached = value.cached_prompt_tokens if value.HasField("cached_prompt_tokens") else 0
    written = value.cache_write_prompt_tokens if value.HasField("cache_write_prompt_tokens") else 0
    return {
        "input_tokens": max(0, value.prompt_tokens - cached - written),
        "output_tokens": value.completion_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    }


def _arguments(text: str) -> Json:
    """tool_use.input is an object: the arguments parsed, or - when the model wrote
    something that is not a JSON object - the text under `_raw_arguments`."""
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": text}


def block(part: content_pb2.Part) -> Json | None:
    """One whole content block for an answer's part (None for kinds an answer never has)."""
    kind = part.WhichOneof("data")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "reasoning":
        if part.reasoning.encrypted_content:
            return {"type": "redacted_thinking", "data": part.reasoning.encrypted_content}
        return {"type": "thinking", "thinking": part.reasoning.text, "signature": part.signature}
    if kind == "tool_call":
        call = part.tool_call
        return {
            "type": "tool_use",
            "id": signed_id(call.id, part.signature),
            "name": call.name,
            "input": _arguments(call.arguments),
        }
    return None


def message_id(response_id: str) -> str:
    return response_id if response_id.startswith("msg_") else f"msg_{response_id or uuid.uuid4().hex}"


def message(
    response_id: str,
    model: str,
    parts: Sequence[content_pb2.Part],
    finish: int,
    used: generation_pb2.Usage | None,
) -> Json:
    """A whole `message` object."""
    return {
        "id": message_id(response_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [b for b in (block(p) for p in parts) if b is not None],
        "stop_reason": stop_reason(finish),
        "stop_sequence": None,
        "usage": usage(used),
    }


class EventWriter:
    """Renders a streamed answer as Anthropic's SSE events, one block at a time
    (server/api/part_order.py). A thinking block's signature is written just
    before its stop, as Anthropic does."""

    def __init__(self, response_id: str, model: str) -> None:
        self._id, self._model = message_id(response_id), model
        self._started = False
        self._order = PartOrder()
        self._blocks = 0  # Anthropic's block index of the open (or next) block
        self._signature = ""

    def start(self, used: generation_pb2.Usage | None = None) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        head = message(self._id, self._model, (), 0, used)
        head["usage"]["output_tokens"] = 0
        return [event("message_start", {"type": "message_start", "message": head})]

    def deltas(self, parts: Sequence[content_pb2.Part]) -> list[bytes]:
        return self.start() + self._render(self._order.feed(parts))

    def finish(self, finish: int, used: generation_pb2.Usage | None) -> list[bytes]:
        out = self.start(used) + self._render(self._order.finish())
        delta = {"stop_reason": stop_reason(finish), "stop_sequence": None}
        out.append(event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage(used)}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out

    def _render(self, steps: Iterable[tuple[str, content_pb2.Part]]) -> list[bytes]:
        out: list[bytes] = []
        for step, part in steps:
            if step == "open":
                out += self._open_block(part)
            elif step == "delta":
                out += self._delta(part)
            else:
                out += self._close(part)
        return out

    def _open_block(self, part: content_pb2.Part) -> list[bytes]:
        kind = part.WhichOneof("data")
        if kind == "reasoning" and part.reasoning.encrypted_content:
            start: Json = {"type": "redacted_thinking", "data": part.reasoning.encrypted_content}
        elif kind == "reasoning":
            start = {"type": "thinking", "thinking": "", "signature": ""}
        elif kind == "tool_call":
            call = part.tool_call
            start = {"type": "tool_use", "id": signed_id(call.id, part.signature), "name": call.name}
            start["input"] = {}
        else:
            start = {"type": "text", "text": ""}
        self._signature = ""
        begin = {"type": "content_block_start", "index": self._blocks, "content_block": start}
        return [event("content_block_start", begin), *self._delta(part)]

    def _delta(self, part: content_pb2.Part) -> list[bytes]:
        kind = part.WhichOneof("data")
        if part.signature and kind == "reasoning":
            self._signature = part.signature
        if kind == "text" and part.text:
            delta: Json = {"type": "text_delta", "text": part.text}
        elif kind == "reasoning" and part.reasoning.text:
            delta = {"type": "thinking_delta", "thinking": part.reasoning.text}
        elif kind == "tool_call" and part.tool_call.arguments:
            delta = {"type": "input_json_delta", "partial_json": part.tool_call.arguments}
        else:
            return []
        body = {"type": "content_block_delta", "index": self._blocks, "delta": delta}
        return [event("content_block_delta", body)]

    def _close(self, part: content_pb2.Part) -> list[bytes]:
        out = []
        if part.WhichOneof("data") == "reasoning" and self._signature:
            delta = {"type": "signature_delta", "signature": self._signature}
            body = {"type": "content_block_delta", "index": self._blocks, "delta": delta}
            out.append(event("content_block_delta", body))
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": self._blocks}))
        self._blocks += 1
        return out


def event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def model_object(model_id: str, display: str) -> Json:
    return {"type": "model", "id": model_id, "display_name": display or model_id, "created_at": _EPOCH}


_EPOCH = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0))

# --- errors -------------------------------------------------------------------------------

_HTTP = {
    code_pb2.INVALID_ARGUMENT: (400, "invalid_request_error"),
    code_pb2.FAILED_PRECONDITION: (400, "invalid_request_error"),
    code_pb2.OUT_OF_RANGE: (400, "invalid_request_error"),
    code_pb2.UNAUTHENTICATED: (401, "authentication_error"),
    code_pb2.PERMISSION_DENIED: (403, "permission_error"),
    code_pb2.NOT_FOUND: (404, "not_found_error"),
    code_pb2.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    code_pb2.CANCELLED: (499, "api_error"),
    code_pb2.UNIMPLEMENTED: (501, "api_error"),
    code_pb2.UNAVAILABLE: (529, "overloaded_error"),
    code_pb2.DEADLINE_EXCEEDED: (504, "timeout_error"),
}


def error(status: status_pb2.Status) -> tuple[int, Json, dict[str, str]]:
    """(HTTP status, Anthropic-style error body, headers) for a google.rpc.Status."""
    http, kind = _HTTP.get(status.code, (500, "api_error"))
    facts = status_facts(status)
    reason, request_id, retry = facts.reason, facts.request_id, facts.retry_seconds
    body: Json = {
        "type": "error",
        "error": {
            "type": kind,
            "message": status.message,
            # Ours: the stable ErrorInfo reason and the whole google.rpc.Status.
            "reason": reason or code_pb2.Code.Name(status.code),
            "status": json_format.MessageToDict(status, preserving_proto_field_name=True),
        },
        "request_id": request_id,
    }
    headers = {"request-id": request_id} if request_id else {}
    if retry is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry)))
    return http, body, headers


__all__ = [
    "EventWriter",
    "block",
    "error",
    "event",
    "message",
    "messages_request",
    "stop_reason",
    "usage",
]
