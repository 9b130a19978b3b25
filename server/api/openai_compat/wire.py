"""OpenAI's Chat Completions / Completions JSON <-> aigc.v1, as pure functions.

The OpenAI-compatible door (server/api/openai_compat/app.py) is a translation
to and from the typed API, not a second implementation: a request becomes an
aigc.v1 ChatRequest or CompleteRequest and goes through the same engine, gate
and errors as a gRPC call; what comes back is rendered in OpenAI's shapes.
Dicts in, dicts out, no SDK objects - tested on their own
(tests/server/api/openai_compat/test_wire.py) and with the official SDKs.

Where it differs from OpenAI (README, "OpenAI-compatible door"):
- one choice only (`n` > 1 is refused), no `logprobs`, `logit_bias`,
  `audio`, `modalities`, `prediction`, `web_search_options`: refused with 400,
  never silently dropped; any other unknown field is refused like OpenAI does;
- `vendor_params` (our extension, e.g. through the SDK's `extra_body`) passes
  vendor-specific fields on, as on the typed API;
- reasoning comes back as `reasoning_content` (DeepSeek's convention, read by
  most OpenAI-compatible clients) when `reasoning_effort` asked for it, and
  with its signatures as `reasoning_details` (OpenRouter's convention,
  reasoning.py), which a client sends back on the assistant message so that a
  tool loop's next turn reaches the vendor signed;
- errors carry our ErrorInfo reason as `code` and the google.rpc.Status code
  and details under `error.status`, with the request id in `x-request-id`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2, status_pb2

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2, tool_pb2
from server.api.openai_compat import reasoning as details
from server.api.structs import parse_struct
from server.core.validation import Violations
from server.errors import InvalidRequest, caller_should_retry, status_facts

Json = dict[str, Any]

_ROLES = {
    "system": content_pb2.ROLE_SYSTEM,
    "developer": content_pb2.ROLE_SYSTEM,
    "user": content_pb2.ROLE_USER,
    "assistant": content_pb2.ROLE_ASSISTANT,
    "tool": content_pb2.ROLE_TOOL,
}
_EFFORTS = {
    "minimal": generation_pb2.ReasoningConfig.EFFORT_LOW,
    "low": generation_pb2.ReasoningConfig.EFFORT_LOW,
    "medium": generation_pb2.ReasoningConfig.EFFORT_MEDIUM,
    "high": generation_pb2.ReasoningConfig.EFFORT_HIGH,
    # Above "high": the highest effort the typed API has.
    "xhigh": generation_pb2.ReasoningConfig.EFFORT_HIGH,
    "max": generation_pb2.ReasoningConfig.EFFORT_HIGH,
}
# "none": no reasoning, the typed API's budget_tokens 0 (refused by models that cannot turn it off).
_NO_REASONING = "none"
_FINISH = {
    generation_pb2.FINISH_REASON_STOP: "stop",
    generation_pb2.FINISH_REASON_MAX_TOKENS: "length",
    generation_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    generation_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    generation_pb2.FINISH_REASON_OTHER: "stop",
}
# Fields we read (chat), and fields that would change the answer we cannot honour.
# Kept current with the installed `openai` SDK's typed chat parameters:
# tests/server/api/openai_compat/test_door_hostile.py fails on a parameter that
# is in neither CHAT_PARAMETERS set (README, "OpenAI-compatible door", lists them).
_CHAT_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    # OpenAI's replacement for `user`: our user_id, like it.
    "safety_identifier",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "stream",
    "stream_options",
    "n",
    "vendor_params",
    # Accepted and without effect here: they change nothing in the answer.
    "store",
    "metadata",
    "service_tier",
    # Prompt-cache hints for OpenAI's own cache: the answer is the same without them.
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    # Only its default, "medium", is accepted (_verbosity): the others would change the answer.
    "verbosity",
}
_COMPLETION_FIELDS = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "stream",
    "stream_options",
    "n",
    "echo",
    "best_of",
    "vendor_params",
}
_UNSUPPORTED = {
    "logprobs": "log probabilities are not offered",
    "top_logprobs": "log probabilities are not offered",
    "logit_bias": "logit_bias is not offered",
    "audio": "audio output is not offered",
    "modalities": "only text (and tool calls) come back",
    "prediction": "predicted outputs are not offered",
    "web_search_options": "web search is not offered",
    "functions": "use tools (the deprecated functions field is not offered)",
    "function_call": "use tool_choice (the deprecated function_call field is not offered)",
    "suffix": "suffix (insertion) is not offered",
    "moderation": "moderated completions are not offered",
}
#: Every chat.completions parameter the door has decided on: read, accepted, or refused by name.
CHAT_PARAMETERS = frozenset(_CHAT_FIELDS | _UNSUPPORTED.keys())
# The largest token limit an int32 field holds; larger ones are refused by the core's cap.
_INT32_MAX = 2**31 - 1


# --- requests -----------------------------------------------------------------------------


def chat_request(body: Any) -> tuple[aigc_service_pb2.ChatRequest, bool, bool]:
    """(the ChatRequest, stream?, include usage in the stream?) from a chat.completions body."""
    problems = Violations()
    if not isinstance(body, dict):
        raise InvalidRequest({"body": "must be a JSON object"})
    _known_fields(body, _CHAT_FIELDS, problems)
    request = aigc_service_pb2.ChatRequest(model=_string(body, "model", problems))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.add("messages", "must be a non-empty array")
    else:
        for i, message in enumerate(messages):
            converted = _message(message, f"messages[{i}]", problems)
            if converted is not None:
                request.messages.append(converted)
    _config(body, request.generation_config, problems, chat=True)
    request.user_id = _string(body, "safety_identifier", problems) or _string(body, "user", problems)
    _tools(body, request, problems)
    _response_format(body.get("response_format"), request, problems)
    effort = body.get("reasoning_effort")
    if effort == _NO_REASONING:
        request.reasoning.budget_tokens = 0
    elif effort is not None:
        if effort not in _EFFORTS:
            problems.add("reasoning_effort", f"one of {_NO_REASONING}, {', '.join(_EFFORTS)}")
        else:
            request.reasoning.effort = _EFFORTS[effort]
            request.reasoning.include_reasoning = True
    _ignored_hints(body, problems)
    _vendor_params(body, request.vendor_params, problems)
    stream, usage = _stream_options(body, problems)
    problems.raise_if_any()
    return request, stream, usage


def completion_request(body: Any) -> tuple[aigc_service_pb2.CompleteRequest, bool, bool]:
    """(the CompleteRequest, stream?, include usage?) from a completions body."""
    problems = Violations()
    if not isinstance(body, dict):
        raise InvalidRequest({"body": "must be a JSON object"})
    _known_fields(body, _COMPLETION_FIELDS, problems)
    request = aigc_service_pb2.CompleteRequest(model=_string(body, "model", problems))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        problems.add("prompt", "must be a string (one prompt; token arrays and batches are not offered)")
    else:
        request.prompt = prompt
    if body.get("echo"):
        problems.add("echo", "echoing the prompt is not offered")
    if body.get("best_of") not in (None, 1):
        problems.add("best_of", "only 1 is offered")
    _config(body, request.generation_config, problems, chat=False)
    request.user_id = _string(body, "user", problems)
    _vendor_params(body, request.vendor_params, problems)
    stream, usage = _stream_options(body, problems)
    problems.raise_if_any()
    return request, stream, usage


def _known_fields(body: Mapping[str, Any], known: set[str], problems: Violations) -> None:
    for name, value in body.items():
        if name in _UNSUPPORTED:
            if value not in (None, False, [], {}):
                problems.add(name, _UNSUPPORTED[name])
        elif name not in known:
            problems.add(name, "unrecognized request argument")
    n = body.get("n")
    if n not in (None, 1):
        problems.add("n", "only one choice (n = 1) is offered")


def _ignored_hints(body: Mapping[str, Any], problems: Violations) -> None:
    """Parameters accepted without effect: their type is still checked, and `verbosity`
    only at its default (another value would change the answer we cannot honour)."""
    _string(body, "prompt_cache_key", problems)
    if body.get("prompt_cache_retention") not in (None, "in_memory", "24h"):
        problems.add("prompt_cache_retention", "in_memory or 24h")
    if body.get("prompt_cache_options") is not None and not isinstance(body["prompt_cache_options"], dict):
        problems.add("prompt_cache_options", "must be an object")
    if body.get("verbosity") not in (None, "medium"):
        problems.add("verbosity", "only medium (the default) is offered: the answer's length is not steered")


def _string(body: Mapping[str, Any], name: str, problems: Violations) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.add(name, "must be a string")
        return ""
    return value


def _text_of(content: Any, where: str, problems: Violations) -> str | None:
    """A string, or an array of text parts joined; None (with a problem) otherwise."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                problems.add(f"{where}[{j}]", "only text parts are allowed here")
                return None
        return "".join(texts)
    problems.add(where, "must be a string or an array of text parts")
    return None


def _message(message: Any, where: str, problems: Violations) -> content_pb2.Message | None:
    if not isinstance(message, dict):
        problems.add(where, "must be an object")
        return None
    role = _ROLES.get(message.get("role"))
    if role is None:
        problems.add(f"{where}.role", "one of system, developer, user, assistant, tool")
        return None
    unknown = set(message) - {
        "role",
        "content",
        "name",
        "tool_calls",
        "tool_call_id",
        "reasoning_content",
        "reasoning_details",
        "refusal",
    }
    for name in sorted(unknown):
        problems.add(f"{where}.{name}", "unrecognized message field")
    out = content_pb2.Message(role=role)
    content = message.get("content")
    if role == content_pb2.ROLE_TOOL:
        result = _tool_result(content, f"{where}.content", problems)
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            problems.add(f"{where}.tool_call_id", "is required for a tool message")
        elif result is not None:
            result.tool_call_id = call_id
            out.parts.append(content_pb2.Part(tool_result=result))
        return out
    if role == content_pb2.ROLE_USER and isinstance(content, list):
        for j, part in enumerate(content):
            converted = _user_part(part, f"{where}.content[{j}]", problems)
            if converted is not None:
                out.parts.append(converted)
        return out
    if role == content_pb2.ROLE_ASSISTANT:
        signatures: dict[str, tuple[str, str]] = {}
        if message.get("reasoning_details") is not None:
            # The whole reasoning with its signatures; reasoning_content repeats its text.
            thinking, signatures = details.parts(
                message["reasoning_details"], f"{where}.reasoning_details", problems.add
            )
            out.parts.extend(thinking)
        elif isinstance(message.get("reasoning_content"), str) and message["reasoning_content"]:
            reasoning = content_pb2.Reasoning(text=message["reasoning_content"])
            out.parts.append(content_pb2.Part(reasoning=reasoning))
        if content is not None:
            text = _text_of(content, f"{where}.content", problems)
            if text:
                out.parts.append(content_pb2.Part(text=text))
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list):
            problems.add(f"{where}.tool_calls", "must be an array")
            calls = []
        for j, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or call.get("type", "function") != "function":
                problems.add(f"{where}.tool_calls[{j}]", "must be a function tool call")
                continue
            arguments = function.get("arguments", "")
            out.parts.append(
                content_pb2.Part(
                    tool_call=content_pb2.ToolCall(
                        id=str(call.get("id") or ""),
                        name=str(function.get("name") or ""),
                        arguments=arguments if isinstance(arguments, str) else "",
                    )
                )
            )
        details.sign_calls(out, signatures, problems.add)
        return out
    text = _text_of(content, f"{where}.content", problems)
    if text is not None:
        out.content = text
    return out


def _tool_result(content: Any, where: str, problems: Violations) -> content_pb2.ToolResult | None:
    """A tool message's content: text, or text and image_url parts (a screenshot tool)."""
    if not isinstance(content, list) or not any(
        isinstance(p, dict) and p.get("type") == "image_url" for p in content
    ):
        text = _text_of(content, where, problems)
        return None if text is None else content_pb2.ToolResult(content=text)
    result = content_pb2.ToolResult()
    for j, part in enumerate(content):
        converted = _user_part(part, f"{where}[{j}]", problems)
        if converted is not None:
            kind = converted.WhichOneof("data")
            result.parts.add(**{kind: getattr(converted, kind)})
    return result


def _user_part(part: Any, where: str, problems: Violations) -> content_pb2.Part | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return content_pb2.Part(text=part["text"])
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url:
            problems.add(f"{where}.image_url.url", "is required")
            return None
        # A data: URL is decoded (and checked) by the core's validation.
        return content_pb2.Part(image=content_pb2.Image(uri=url))
    problems.add(f"{where}.type", "text or image_url (audio and files are not offered)")
    return None


def _config(
    body: Mapping[str, Any], config: generation_pb2.GenerationConfig, problems: Violations, *, chat: bool
) -> None:
    limit = body.get("max_completion_tokens") if chat else None
    if limit is None:
        limit = body.get("max_tokens")
    if limit is not None:
        name = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
        if not _whole(limit):
            problems.add(name, "must be a whole number")
        elif limit <= 0:
            problems.add(name, "must be greater than 0")
        else:
            # Above int32 it could never pass a model's cap anyway: the cap names the limit.
            config.max_output_tokens = min(limit, _INT32_MAX)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problems.add(name, "must be a number")
        else:
            setattr(config, name, float(value))
    seed = body.get("seed")
    if seed is not None:
        if _whole(seed) and -(2**63) <= seed < 2**63:
            config.seed = seed
        else:
            problems.add("seed", "must be a whole number")
    stop = body.get("stop")
    if isinstance(stop, str):
        config.stop_sequences.append(stop)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        config.stop_sequences.extend(stop)
    elif stop is not None:
        problems.add("stop", "must be a string or an array of strings")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tools(body: Mapping[str, Any], request: aigc_service_pb2.ChatRequest, problems: Violations) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            problems.add("tools", "must be an array")
            tools = []
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or tool.get("type") != "function":
                problems.add(f"tools[{i}]", 'only {"type": "function", "function": {...}} tools are offered')
                continue
            declaration = tool_pb2.FunctionDeclaration(
                name=function.get("name") if isinstance(function.get("name"), str) else "",
                description=function.get("description")
                if isinstance(function.get("description"), str)
                else "",
            )
            parameters = function.get("parameters")
            if isinstance(parameters, dict):
                _struct(parameters, declaration.parameters, f"tools[{i}].function.parameters", problems)
            elif parameters is not None:
                problems.add(f"tools[{i}].function.parameters", "must be a JSON Schema object")
            request.tools.append(tool_pb2.Tool(function=declaration))
    choice = body.get("tool_choice")
    if choice is None:
        return
    modes = {
        "auto": tool_pb2.ToolChoice.MODE_AUTO,
        "none": tool_pb2.ToolChoice.MODE_NONE,
        "required": tool_pb2.ToolChoice.MODE_REQUIRED,
    }
    if isinstance(choice, str) and choice in modes:
        request.tool_choice.mode = modes[choice]
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        request.tool_choice.function_name = choice["function"]["name"]
    else:
        problems.add("tool_choice", 'auto, none, required or {"type": "function", "function": {"name": ...}}')


def _response_format(fmt: Any, request: aigc_service_pb2.ChatRequest, problems: Violations) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    spec = fmt.get("json_schema") if kind == "json_schema" else None
    set_response_format(
        kind,
        spec,
        request.response_format,
        problems,
        type_at="response_format.type",
        spec_at="response_format.json_schema",
    )


def set_response_format(
    kind: Any,
    spec: Any,
    out: generation_pb2.ResponseFormat,
    problems: Violations,
    *,
    type_at: str,
    spec_at: str,
) -> None:
    """OpenAI's output format - `kind` text, json_object or json_schema, and for json_schema
    the spec's name, schema and strict - into `out`. Chat Completions nests the spec
    (response_format.json_schema), the Responses API does not (text.format): `type_at`
    and `spec_at` name the fields in problems."""
    if kind == "text":
        out.type = generation_pb2.ResponseFormat.TYPE_TEXT
    elif kind == "json_object":
        out.type = generation_pb2.ResponseFormat.TYPE_JSON
    elif kind == "json_schema":
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            problems.add(f"{spec_at}.schema", "is required: a JSON Schema object")
            return
        out.type = generation_pb2.ResponseFormat.TYPE_JSON_SCHEMA
        out.name = spec.get("name") if isinstance(spec.get("name"), str) else ""
        out.strict = spec.get("strict") is True
        _struct(spec["schema"], out.schema, f"{spec_at}.schema", problems)
    else:
        problems.add(type_at, "text, json_object or json_schema")


def _vendor_params(body: Mapping[str, Any], out: struct_pb2.Struct, problems: Violations) -> None:
    params = body.get("vendor_params")
    if params is None:
        return
    if not isinstance(params, dict):
        problems.add("vendor_params", "must be an object")
        return
    _struct(params, out, "vendor_params", problems)


def _struct(value: Mapping[str, Any], out: struct_pb2.Struct, where: str, problems: Violations) -> None:
    why = parse_struct(value, out)  # too deep a schema was a 500 (tests/fuzz)
    if why:
        problems.add(where, why)


def _stream_options(body: Mapping[str, Any], problems: Violations) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream not in (None, True, False):
        problems.add("stream", "must be a boolean")
    options = body.get("stream_options")
    usage = False
    if options is not None:
        if not stream:
            problems.add("stream_options", "only allowed with stream: true")
        elif not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}:
            problems.add("stream_options", "only include_usage is offered")
        else:
            usage = options.get("include_usage") is True
    return stream is True, usage


# --- responses ----------------------------------------------------------------------------


def finish_reason(finish: int) -> str | None:
    return _FINISH.get(finish)


def usage(value: generation_pb2.Usage | None) -> Json | None:
    if value is None:
        return None
    out: Json = {
        "prompt_tokens": value.prompt_tokens,
        "completion_tokens": value.completion_tokens,
        "total_tokens": value.total_tokens,
    }
    if value.HasField("reasoning_tokens"):
        out["completion_tokens_details"] = {"reasoning_tokens": value.reasoning_tokens}
    if value.HasField("cached_prompt_tokens"):
        out["prompt_tokens_details"] = {"cached_tokens": value.cached_prompt_tokens}
    return out


def chat_completion(
    response_id: str,
    model: str,
    parts: Sequence[content_pb2.Part],
    finish: int,
    used: generation_pb2.Usage | None,
    created: int | None = None,
) -> Json:
    """A whole `chat.completion` object."""
    text, reasoning, calls = [], [], []
    for part in parts:
        kind = part.WhichOneof("data")
        if kind == "text":
            text.append(part.text)
        elif kind == "reasoning":
            reasoning.append(part.reasoning.text)
        elif kind == "tool_call":
            call = part.tool_call
            calls.append(
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            )
    message: Json = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    signed = details.details(parts)
    if signed:
        message["reasoning_details"] = signed
    if calls:
        message["tool_calls"] = calls
    out: Json = {
        "id": response_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason(finish), "logprobs": None}
        ],
    }
    if used is not None:
        out["usage"] = usage(used)
    return out


class ChunkWriter:
    """Renders a streamed answer as `chat.completion.chunk` objects.

    OpenAI numbers a message's tool calls 0, 1, ... in `tool_calls[].index`;
    ours carry the part's stream position (`Part.index`) instead, shared with
    text and reasoning parts: the first delta of each call gets the next
    number, and repeats id, type and name only then.
    """

    def __init__(self, response_id: str, model: str, created: int | None = None) -> None:
        self._head = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created or int(time.time()),
            "model": model,
        }
        self._calls: dict[int, int] = {}
        self._details = details.Numbering()
        self._started = False

    def _chunk(self, delta: Json, finish: str | None = None, *, item: Json | None = None) -> Json:
        if item is not None:
            delta["reasoning_details"] = [item]
        return {
            **self._head,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def deltas(self, parts: Iterable[content_pb2.Part]) -> list[Json]:
        """The chunks for one batch of part deltas (the first one also says the role)."""
        out = []
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        for part in parts:
            kind = part.WhichOneof("data")
            item = self._details.delta(part)
            if kind == "text":
                out.append(self._chunk({"content": part.text}, item=item))
            elif kind == "reasoning":
                out.append(self._chunk({"reasoning_content": part.reasoning.text}, item=item))
            elif kind == "tool_call":
                call = part.tool_call
                number = self._calls.get(part.index)
                if number is None:
                    number = self._calls[part.index] = len(self._calls)
                    delta = {
                        "index": number,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                else:
                    delta = {"index": number, "function": {"arguments": call.arguments}}
                out.append(self._chunk({"tool_calls": [delta]}, item=item))
        return out

    def finish(self, finish: int, used: generation_pb2.Usage | None, include_usage: bool) -> list[Json]:
        """The finish chunk, and the usage chunk (empty choices) when asked for."""
        out = [] if self._started else self.deltas(())
        out.append(self._chunk({}, finish_reason(finish)))
        if include_usage:
            out.append({**self._head, "choices": [], "usage": usage(used)})
        return out


def text_completion(
    response_id: str,
    model: str,
    text: str,
    finish: int,
    used: generation_pb2.Usage | None,
    *,
    chunk: bool = False,
) -> Json:
    out: Json = {
        "id": response_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": text,
                "finish_reason": finish_reason(finish) if finish else None,
                "logprobs": None,
            }
        ],
    }
    if used is not None and not chunk:
        out["usage"] = usage(used)
    return out


def model_object(model_id: str, owner: str) -> Json:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}


# --- errors -------------------------------------------------------------------------------

_HTTP = {
    code_pb2.INVALID_ARGUMENT: (400, "invalid_request_error"),
    code_pb2.FAILED_PRECONDITION: (400, "invalid_request_error"),
    code_pb2.OUT_OF_RANGE: (400, "invalid_request_error"),
    code_pb2.UNAUTHENTICATED: (401, "authentication_error"),
    code_pb2.PERMISSION_DENIED: (403, "permission_error"),
    code_pb2.NOT_FOUND: (404, "not_found_error"),
    code_pb2.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    code_pb2.CANCELLED: (499, "cancelled"),
    code_pb2.UNIMPLEMENTED: (501, "api_error"),
    code_pb2.UNAVAILABLE: (503, "api_error"),
    code_pb2.DEADLINE_EXCEEDED: (504, "timeout_error"),
}


def error(status: status_pb2.Status) -> tuple[int, Json, dict[str, str]]:
    """(HTTP status, OpenAI-style error body, headers) for a google.rpc.Status."""
    http, kind = _HTTP.get(status.code, (500, "api_error"))
    facts = status_facts(status)
    reason, param, retry, request_id = facts.reason, facts.field, facts.retry_seconds, facts.request_id
    body = {
        "error": {
            "message": status.message,
            "type": kind,
            "param": param,
            "code": reason or code_pb2.Code.Name(status.code),
            # The whole google.rpc.Status, as the typed API returns it.
            "status": json_format.MessageToDict(status, preserving_proto_field_name=True),
        }
    }
    headers = {"x-request-id": request_id} if request_id else {}
    # Whether the SDKs should retry: they obey this before their own rule (every 5xx).
    headers["x-should-retry"] = "true" if caller_should_retry(status.code, retry) else "false"
    if retry is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry)))
        headers["retry-after-ms"] = str(round(retry * 1000))
    return http, body, headers


__all__ = [
    "ChunkWriter",
    "chat_completion",
    "chat_request",
    "completion_request",
    "error",
    "finish_reason",
    "model_object",
    "text_completion",
    "usage",
]
