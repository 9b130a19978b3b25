"""OpenAI's Responses API JSON <-> aigc.v1, as pure functions (the door's side).

`POST /openai/v1/responses` (responses.py) serves code written for the
Responses API - the openai SDK's `responses.create` / `responses.stream`,
the openai-agents SDK, Codex - on any of our models: the request becomes an
aigc.v1 ChatRequest for the same engine, the answer comes back as a
`response` object (or its stream of events). Dicts in, dicts out
(tests/server/api/openai_compat/test_responses_wire.py; the SDKs in
tests/e2e/test_responses_door_e2e.py).

Translation (where it differs from OpenAI: README, "The doors"):
- Stateless: nothing is stored. `store` is accepted and the answer says
  `store: false`; `previous_response_id` and `conversation` are refused with
  400 - send the whole conversation in `input`, as with `store: false`.
- `instructions` is a ROLE_SYSTEM message; input items: messages (string or
  `input_text` / `input_image` / `output_text` parts), `function_call`,
  `function_call_output` and `reasoning` items. Consecutive function call
  outputs are one ROLE_TOOL message.
- Reasoning items carry the reasoning text as `summary` and the part's
  signature as `encrypted_content` (Anthropic's redacted thinking as
  REDACTED_PREFIX + its data), so a caller that sends its items back
  continues the provider's reasoning; signatures on function calls ride in
  `call_id` (server/api/part_order.py). A signature on a text part (Gemini
  may sign its last text) has no place in a message item and is not kept:
  Gemini does not need it back.
- `text.format` is the response format (text, json_object, json_schema);
  `reasoning.effort` the reasoning effort (reasoning items come back when it
  is set); function tools only - built-in tools (web search, file search,
  computer use, MCP, ...) are refused with 400.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2, tool_pb2
from server.api.openai_compat import wire
from server.api.part_order import PartOrder, signed_id, split_signature
from server.api.structs import parse_struct
from server.core.validation import Violations
from server.errors import InvalidRequest

Json = dict[str, Any]

REDACTED_PREFIX = "redacted:"

_FIELDS = {
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "text",
    "reasoning",
    "stream",
    "user",
    # Accepted and without effect here: they change nothing in the answer.
    "store",
    "metadata",
    "parallel_tool_calls",
    "include",
    "truncation",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "stream_options",
}
_UNSUPPORTED = {
    "previous_response_id": "responses are not stored here: send the whole conversation in `input`",
    "conversation": "conversations are not stored here: send the whole conversation in `input`",
    "background": "background responses are not offered",
    "prompt": "stored prompts are not offered",
    "top_logprobs": "log probabilities are not offered",
    "max_tool_calls": "max_tool_calls is not offered",
}
_EFFORTS = {
    "minimal": generation_pb2.ReasoningConfig.EFFORT_LOW,
    "low": generation_pb2.ReasoningConfig.EFFORT_LOW,
    "medium": generation_pb2.ReasoningConfig.EFFORT_MEDIUM,
    "high": generation_pb2.ReasoningConfig.EFFORT_HIGH,
}
_ROLES = {
    "user": content_pb2.ROLE_USER,
    "system": content_pb2.ROLE_SYSTEM,
    "developer": content_pb2.ROLE_SYSTEM,
    "assistant": content_pb2.ROLE_ASSISTANT,
}


# --- requests -----------------------------------------------------------------------------


def responses_request(body: Any) -> tuple[aigc_service_pb2.ChatRequest, bool]:
    """(the ChatRequest, stream?) from a /responses body; InvalidRequest names every problem."""
    if not isinstance(body, dict):
        raise InvalidRequest({"body": "must be a JSON object"})
    problems = Violations()
    for name, value in body.items():
        if name in _UNSUPPORTED:
            if value not in (None, False, 0, "", [], {}):
                problems.add(name, _UNSUPPORTED[name])
        elif name not in _FIELDS:
            problems.add(name, "unrecognized request argument")
    request = aigc_service_pb2.ChatRequest(model=_string(body, "model", problems))
    instructions = _string(body, "instructions", problems)
    if instructions:
        request.messages.append(content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=instructions))
    given = body.get("input")
    if isinstance(given, str):
        given = [{"type": "message", "role": "user", "content": given}]
    if not isinstance(given, list) or not given:
        problems.add("input", "must be a string or a non-empty array of input items")
    else:
        _items(given, request, problems)
    _config(body, request.generation_config, problems)
    request.user_id = _string(body, "user", problems)
    _tools(body, request, problems)
    _text(body.get("text"), request, problems)
    _reasoning(body.get("reasoning"), request, problems)
    stream = body.get("stream")
    if stream not in (None, True, False):
        problems.add("stream", "must be a boolean")
    problems.raise_if_any()
    return request, stream is True


def _string(body: Mapping[str, Any], name: str, problems: Violations) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.add(name, "must be a string")
        return ""
    return value


def _items(items: list[Any], request: aigc_service_pb2.ChatRequest, problems: Violations) -> None:
    def last(role: int) -> content_pb2.Message:
        if not request.messages or request.messages[-1].role != role:
            request.messages.append(content_pb2.Message(role=role))
        return request.messages[-1]

    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            problems.add(where, "must be an object")
            continue
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(item.get("role"))
            if role is None:
                problems.add(f"{where}.role", "one of user, system, developer, assistant")
                continue
            parts = _content(item.get("content"), role, f"{where}.content", problems)
            if role == content_pb2.ROLE_ASSISTANT:
                last(role).parts.extend(parts)
            elif role == content_pb2.ROLE_SYSTEM:
                text = "".join(p.text for p in parts)
                request.messages.append(content_pb2.Message(role=role, content=text))
            else:
                request.messages.append(content_pb2.Message(role=role, parts=parts))
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
            if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, str):
                problems.add(where, "a function_call needs string call_id, name and arguments")
                continue
            plain, signature = split_signature(call_id)
            call = content_pb2.ToolCall(id=plain, name=name, arguments=arguments)
            last(content_pb2.ROLE_ASSISTANT).parts.append(
                content_pb2.Part(tool_call=call, signature=signature)
            )
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str | list):
                problems.add(where, "a function_call_output needs a string call_id and output")
                continue
            result = content_pb2.ToolResult(tool_call_id=split_signature(call_id)[0])
            if isinstance(output, str):
                result.content = output
            else:
                _output_parts(output, result, f"{where}.output", problems)
            last(content_pb2.ROLE_TOOL).parts.append(content_pb2.Part(tool_result=result))
        elif kind == "reasoning":
            part = _reasoning_item(item, where, problems)
            if part is not None:
                last(content_pb2.ROLE_ASSISTANT).parts.append(part)
        else:
            problems.add(f"{where}.type", "message, function_call, function_call_output or reasoning")


def _content(content: Any, role: int, where: str, problems: Violations) -> list[content_pb2.Part]:
    if isinstance(content, str):
        return [content_pb2.Part(text=content)]
    if not isinstance(content, list):
        problems.add(where, "must be a string or an array of content parts")
        return []
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            parts.append(content_pb2.Part(text=part["text"]))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(content_pb2.Part(text=part["refusal"]))
        elif kind == "input_image" and role == content_pb2.ROLE_USER:
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                problems.add(f"{where}[{j}].image_url", "is required (file ids are not offered)")
            else:
                parts.append(content_pb2.Part(image=content_pb2.Image(uri=url)))
        else:
            problems.add(
                f"{where}[{j}].type", "input_text, input_image (user) or output_text (files are not offered)"
            )
    return parts


def _output_parts(
    output: list[Any], result: content_pb2.ToolResult, where: str, problems: Violations
) -> None:
    """A function_call_output's text and image parts (a screenshot tool)."""
    for j, part in enumerate(output):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            result.parts.add(text=part["text"])
        elif kind == "input_image" and isinstance(part.get("image_url"), str) and part["image_url"]:
            result.parts.add(image=content_pb2.Image(uri=part["image_url"]))
        else:
            problems.add(
                f"{where}[{j}]", "input_text or input_image with an image_url (files are not offered)"
            )


def _reasoning_item(item: Mapping[str, Any], where: str, problems: Violations) -> content_pb2.Part | None:
    summary, encrypted = item.get("summary", []), item.get("encrypted_content") or ""
    if not isinstance(summary, list) or not isinstance(encrypted, str):
        problems.add(where, "a reasoning item needs a summary array and a string encrypted_content")
        return None
    if encrypted.startswith(REDACTED_PREFIX):
        return content_pb2.Part(
            reasoning=content_pb2.Reasoning(encrypted_content=encrypted.removeprefix(REDACTED_PREFIX))
        )
    text = "".join(str(s.get("text", "")) for s in summary if isinstance(s, dict))
    if not text and not encrypted:
        return None  # nothing a provider could continue from (another service's item)
    return content_pb2.Part(reasoning=content_pb2.Reasoning(text=text), signature=encrypted)


def _config(body: Mapping[str, Any], config: generation_pb2.GenerationConfig, problems: Violations) -> None:
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            config.max_output_tokens = min(limit, 2**31 - 1)
        else:
            problems.add("max_output_tokens", "must be a whole number above 0")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problems.add(name, "must be a number")
        else:
            setattr(config, name, float(value))


def _tools(body: Mapping[str, Any], request: aigc_service_pb2.ChatRequest, problems: Violations) -> None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        problems.add("tools", "must be an array")
        tools = None
    for i, tool in enumerate(tools or ()):
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(tool.get("name"), str)
        ):
            problems.add(f"tools[{i}]", "only function tools are offered (built-in tools are not)")
            continue
        declaration = tool_pb2.FunctionDeclaration(name=tool["name"])
        if isinstance(tool.get("description"), str):
            declaration.description = tool["description"]
        parameters = tool.get("parameters")
        if isinstance(parameters, dict):
            why = parse_struct(parameters, declaration.parameters)
            if why:
                problems.add(f"tools[{i}].parameters", why)
                continue
        elif parameters is not None:
            problems.add(f"tools[{i}].parameters", "must be a JSON Schema object")
        request.tools.append(tool_pb2.Tool(function=declaration))
    choice = body.get("tool_choice")
    modes = {
        "auto": tool_pb2.ToolChoice.MODE_AUTO,
        "none": tool_pb2.ToolChoice.MODE_NONE,
        "required": tool_pb2.ToolChoice.MODE_REQUIRED,
    }
    if choice is None:
        return
    if isinstance(choice, str) and choice in modes:
        request.tool_choice.mode = modes[choice]
    elif (
        isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str)
    ):
        request.tool_choice.function_name = choice["name"]
    else:
        problems.add("tool_choice", 'auto, none, required or {"type": "function", "name": ...}')


def _text(text: Any, request: aigc_service_pb2.ChatRequest, problems: Violations) -> None:
    if text is None:
        return
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(text, dict) or set(text) - {"format", "verbosity"}:
        problems.add("text", "an object with format (verbosity is accepted and not passed on)")
        return
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    wire.set_response_format(
        kind, fmt, request.response_format, problems, type_at="text.format.type", spec_at="text.format"
    )


def _reasoning(reasoning: Any, request: aigc_service_pb2.ChatRequest, problems: Violations) -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        problems.add("reasoning", "must be an object with effort (and summary)")
        return
    effort = reasoning.get("effort")
    if effort is None or effort == "none":
        return
    if effort not in _EFFORTS:
        problems.add("reasoning.effort", f"one of none, {', '.join(_EFFORTS)}")
        return
    request.reasoning.effort = _EFFORTS[effort]
    request.reasoning.include_reasoning = True


# --- answers ------------------------------------------------------------------------------


def usage(value: generation_pb2.Usage | None) -> Json | None:
    if value is None:
        return None
    return {
        "input_tokens": value.prompt_tokens,
        "input_tokens_details": {"cached_tokens": value.cached_prompt_tokens},
        "output_tokens": value.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": value.reasoning_tokens},
        "total_tokens": value.total_tokens,
    }


def response_id(given: str) -> str:
    return given if given.startswith("resp_") else f"resp_{given or uuid.uuid4().hex}"


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _status(finish: int) -> tuple[str, Json | None]:
    if finish == generation_pb2.FINISH_REASON_MAX_TOKENS:
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == generation_pb2.FINISH_REASON_CONTENT_FILTER:
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response(
    rid: str,
    model: str,
    output: list[Json],
    finish: int,
    used: generation_pb2.Usage | None,
    *,
    created: int | None = None,
    status: str | None = None,
) -> Json:
    """A whole `response` object (status from the finish reason unless given)."""
    state, incomplete = _status(finish)
    return {
        "id": response_id(rid),
        "object": "response",
        "created_at": created or int(time.time()),
        "status": status or state,
        "error": None,
        "incomplete_details": incomplete if status is None else None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage(used) if status is None else None,
        "metadata": {},
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> Json:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _reasoning_out(item_id: str, part: content_pb2.Part, text: str) -> Json:
    item: Json = {"type": "reasoning", "id": item_id, "summary": []}
    if text:
        item["summary"] = [{"type": "summary_text", "text": text}]
    if part.reasoning.encrypted_content:
        item["encrypted_content"] = REDACTED_PREFIX + part.reasoning.encrypted_content
    elif part.signature:
        item["encrypted_content"] = part.signature
    return item


def _call_item(item_id: str, part: content_pb2.Part, arguments: str, status: str = "completed") -> Json:
    call = part.tool_call
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": signed_id(call.id, part.signature),
        "name": call.name,
        "arguments": arguments,
        "status": status,
    }


def output_items(parts: Sequence[content_pb2.Part]) -> list[Json]:
    """A unary answer's parts as output items, in order."""
    out = []
    for part in parts:
        kind = part.WhichOneof("data")
        if kind == "text":
            out.append(_message_item(_item_id("msg"), part.text))
        elif kind == "reasoning":
            out.append(_reasoning_out(_item_id("rs"), part, part.reasoning.text))
        elif kind == "tool_call":
            out.append(_call_item(_item_id("fc"), part, part.tool_call.arguments))
    return out


class EventWriter:
    """Renders a streamed answer as the Responses API's events, one output item at a
    time (server/api/part_order.py), each with its `sequence_number`."""

    def __init__(self, rid: str, model: str) -> None:
        self._id, self._model = response_id(rid), model
        self._created = int(time.time())
        self._sequence = 0
        self._order = PartOrder()
        self._items: list[Json] = []
        self._item: Json | None = None  # the open item
        self._text: list[str] = []
        self._signature = ""
        self._started = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    def _head(self, status: str) -> Json:
        return response(self._id, self._model, [], 0, None, created=self._created, status=status)

    def start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [
            self._event("response.created", response=self._head("in_progress")),
            self._event("response.in_progress", response=self._head("in_progress")),
        ]

    def deltas(self, parts: Sequence[content_pb2.Part]) -> list[bytes]:
        return self.start() + self._render(self._order.feed(parts))

    def finish(self, finish: int, used: generation_pb2.Usage | None) -> list[bytes]:
        out = self.start() + self._render(self._order.finish())
        done = response(self._id, self._model, self._items, finish, used, created=self._created)
        kind = "response.completed" if done["status"] == "completed" else "response.incomplete"
        out.append(self._event(kind, response=done))
        return out

    def error(self, body: Json) -> bytes:
        """The in-band error: the Responses API's `error` event, with the OpenAI error body
        under `error` (what the openai SDK raises APIError from)."""
        inner = body["error"]
        return self._event(
            "error", code=inner["code"], message=inner["message"], param=inner["param"], **body
        )

    def _render(self, steps: Iterable[tuple[str, content_pb2.Part]]) -> list[bytes]:
        out: list[bytes] = []
        for step, part in steps:
            if step == "open":
                out += self._open(part)
            elif step == "delta":
                out += self._delta(part)
            else:
                out += self._close(part)
        return out

    def _where(self) -> Json:
        assert self._item is not None
        return {"item_id": self._item["id"], "output_index": len(self._items)}

    def _open(self, part: content_pb2.Part) -> list[bytes]:
        kind = part.WhichOneof("data")
        self._text, self._signature = [], ""
        if kind == "text":
            self._item = _message_item(_item_id("msg"), "", "in_progress")
            self._item["content"] = []
            first = _message_item("", "")["content"][0]
            opened = [
                self._event("response.output_item.added", output_index=len(self._items), item=self._item),
                self._event("response.content_part.added", **self._where(), content_index=0, part=first),
            ]
        elif kind == "reasoning":
            self._item = {"type": "reasoning", "id": _item_id("rs"), "summary": []}
            summary = {"type": "summary_text", "text": ""}
            opened = [
                self._event("response.output_item.added", output_index=len(self._items), item=self._item),
                self._event(
                    "response.reasoning_summary_part.added", **self._where(), summary_index=0, part=summary
                ),
            ]
        else:
            self._item = _call_item(_item_id("fc"), part, "", "in_progress")
            opened = [
                self._event("response.output_item.added", output_index=len(self._items), item=self._item)
            ]
        return opened + self._delta(part)

    def _delta(self, part: content_pb2.Part) -> list[bytes]:
        kind = part.WhichOneof("data")
        if part.signature:
            self._signature = part.signature
        if kind == "text" and part.text:
            self._text.append(part.text)
            return [
                self._event(
                    "response.output_text.delta",
                    **self._where(),
                    content_index=0,
                    delta=part.text,
                    logprobs=[],
                )
            ]
        if kind == "reasoning" and part.reasoning.text:
            self._text.append(part.reasoning.text)
            return [
                self._event(
                    "response.reasoning_summary_text.delta",
                    **self._where(),
                    summary_index=0,
                    delta=part.reasoning.text,
                )
            ]
        if kind == "tool_call" and part.tool_call.arguments:
            self._text.append(part.tool_call.arguments)
            return [
                self._event(
                    "response.function_call_arguments.delta", **self._where(), delta=part.tool_call.arguments
                )
            ]
        return []

    def _close(self, part: content_pb2.Part) -> list[bytes]:
        kind, text, where = part.WhichOneof("data"), "".join(self._text), self._where()
        assert self._item is not None
        if kind == "text":
            item = _message_item(self._item["id"], text)
            done = item["content"][0]
            out = [
                self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]),
                self._event("response.content_part.done", **where, content_index=0, part=done),
            ]
        elif kind == "reasoning":
            signed = content_pb2.Part()
            signed.CopyFrom(part)
            signed.signature = self._signature
            item = _reasoning_out(self._item["id"], signed, text)
            summary = {"type": "summary_text", "text": text}
            out = [
                self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text),
                self._event("response.reasoning_summary_part.done", **where, summary_index=0, part=summary),
            ]
        else:
            signed = content_pb2.Part()
            signed.CopyFrom(part)
            signed.signature = self._signature
            item = _call_item(self._item["id"], signed, text)
            out = [
                self._event(
                    "response.function_call_arguments.done", **where, name=item["name"], arguments=text
                )
            ]
        out.append(self._event("response.output_item.done", output_index=len(self._items), item=item))
        self._items.append(item)
        self._item = None
        return out


__all__ = ["REDACTED_PREFIX", "EventWriter", "output_items", "response", "responses_request", "usage"]
