"""Checks requests against the contract before anything reaches a provider.

    check_chat / check_complete   the request on its own: roles and parts,
                                  tool calls answered by tool results, images,
                                  tools and schemas, generation config, limits
    check_vendor_params           vendor_params against the chosen provider's
                                  reserved keys
    struct_problem                a google.protobuf.Struct that JSON, the
                                  vendors and our own checks cannot take:
                                  NaN/Infinity, NUL, nesting past 32 levels
    pattern_problem               a JSON Schema `pattern` we cannot check
                                  safely (RE2 syntax, bounded repetitions)
    check_capabilities            what the chosen model can do

Violations are collected into one `Violations` (the engine adds the
provider's own, from Provider.validate), so the caller learns about all bad
fields at once (google.rpc.BadRequest lists them, with field paths such as
`messages[2].parts[0].image.data`), not one per round trip. A request that
needs a capability its model lacks is CapabilityNotSupported, naming both.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import re2
from google.protobuf import descriptor, json_format, struct_pb2
from google.protobuf.message import Message as ProtoMessage

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2, model_pb2, tool_pb2
from server.core.limits import Limits
from server.errors import CapabilityNotSupported, InvalidRequest
from server.providers.base import parts_of
from server.providers.vendor_params import integral_numbers

MAX_STOP_SEQUENCES = 4
MAX_USER_ID_CHARS = 256

_ROLE_PARTS = {
    content_pb2.ROLE_SYSTEM: frozenset({"text"}),
    content_pb2.ROLE_USER: frozenset({"text", "image"}),
    content_pb2.ROLE_ASSISTANT: frozenset({"text", "tool_call", "reasoning"}),
    content_pb2.ROLE_TOOL: frozenset({"tool_result"}),
}
_ROLE_NAMES = {
    content_pb2.ROLE_SYSTEM: "system",
    content_pb2.ROLE_USER: "user",
    content_pb2.ROLE_ASSISTANT: "assistant",
    content_pb2.ROLE_TOOL: "tool",
}
# What every provider accepts as a function name (OpenAI's and Anthropic's
# rule; Gemini's also wants a letter or underscore first).
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The first bytes of each image type we accept (and what the vendors accept).
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # + b"WEBP" at offset 8, checked below
}
_URI_SCHEMES = ("https://", "http://", "gs://")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.S)

# Capability, the name callers see, and what it is, per request feature.
_CAPABILITY_TEXT = {
    model_pb2.CAPABILITY_TOOLS: "tool calling",
    model_pb2.CAPABILITY_VISION: "image input",
    model_pb2.CAPABILITY_JSON_OUTPUT: "JSON output",
    model_pb2.CAPABILITY_JSON_SCHEMA: "JSON-schema output",
    model_pb2.CAPABILITY_REASONING: "reasoning controls",
}


class Violations(dict[str, str]):
    """field path -> what is wrong; the first complaint about a field wins."""

    def add(self, field: str, why: str) -> None:
        self.setdefault(field, why)

    def raise_if_any(self) -> None:
        if self:
            raise InvalidRequest(self)


# --- stage 1: the request on its own --------------------------------------------------------


# NUL is valid in a protobuf string and in JSON (\u0000), but C-string code at
# vendors and in llama.cpp truncates text at it: refused, not silently cut -
# in every string of the request (one rule: _strings), Struct keys and values
# included.
_NUL = "must not contain NUL (U+0000) characters"
# Containers (objects, arrays) nested in a Struct: about what protobuf's own
# parser lets through a gRPC message (100 message levels, 3 per JSON object),
# so every surface - gRPC, REST, the OpenAI door - has one bound.
MAX_STRUCT_DEPTH = 32
# Repetition counts in a schema `pattern`: RE2's own bound, which also bounds
# nested counts ((a{1000}){1000} is refused).
MAX_PATTERN_REPEAT = 1000


def check_chat(request: aigc_service_pb2.ChatRequest, limits: Limits, v: Violations) -> dict[str, Any]:
    """Adds every bad field to `v`; returns the vendor_params as a dict."""
    _strings(request, "", v)
    _messages(request.messages, limits, v)
    tool_names = _tools(request.tools, limits, v)
    if request.HasField("tool_choice"):
        _tool_choice(request.tool_choice, tool_names, bool(request.tools), v)
    if request.HasField("response_format"):
        _response_format(request.response_format, limits, v)
    config = request.generation_config
    _generation_config(config, v)
    if request.HasField("reasoning"):
        _reasoning(request.reasoning, config, v)
    _user_id(request.user_id, v)
    return _vendor_params(request, v)


def check_complete(
    request: aigc_service_pb2.CompleteRequest, limits: Limits, v: Violations
) -> dict[str, Any]:
    """Adds every bad field to `v`; returns the vendor_params as a dict."""
    if not request.prompt:
        v.add("prompt", "must not be empty")
    elif len(request.prompt) > limits.max_text_chars:
        v.add("prompt", f"at most {limits.max_text_chars} characters")
    _strings(request, "", v)
    _generation_config(request.generation_config, v)
    _user_id(request.user_id, v)
    return _vendor_params(request, v)


def _messages(messages: Sequence[content_pb2.Message], limits: Limits, v: Violations) -> None:
    if not messages:
        v.add("messages", "at least one message is required")
        return
    if len(messages) > limits.max_messages:
        v.add("messages", f"at most {limits.max_messages} messages are allowed")
        return
    images = 0
    # Tool calls of the last assistant message that still wait for results.
    open_calls: dict[str, int] = {}
    open_since = -1
    seen_calls: set[str] = set()
    non_system = False
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        allowed = _ROLE_PARTS.get(message.role)
        if allowed is None:
            v.add(f"{where}.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL")
            continue
        non_system = non_system or message.role != content_pb2.ROLE_SYSTEM
        if message.role != content_pb2.ROLE_TOOL and open_calls:
            _unanswered(open_calls, open_since, v)
            open_calls = {}
        if message.content and message.parts:
            v.add(f"{where}.content", "set content or parts, not both")
            continue
        parts = parts_of(message)
        if not parts:
            v.add(f"{where}.parts", "a message needs content: set content or at least one part")
            continue
        if len(parts) > limits.max_parts_per_message:
            v.add(f"{where}.parts", f"at most {limits.max_parts_per_message} parts per message")
            continue
        if message.role == content_pb2.ROLE_ASSISTANT:
            open_calls, open_since = {}, i
        role = _ROLE_NAMES[message.role]
        for j, part in enumerate(parts):
            at = f"{where}.content" if message.content else f"{where}.parts[{j}]"
            kind = part.WhichOneof("data")
            if kind is None:
                v.add(at, "set one of text, image, tool_call, tool_result or reasoning")
                continue
            if kind not in allowed:
                v.add(f"{at}.{kind}", f"{role} messages may not hold {kind} parts")
                continue
            if part.signature and message.role != content_pb2.ROLE_ASSISTANT:
                v.add(f"{at}.signature", "only parts of assistant messages carry signatures")
            if kind == "text":
                if not part.text:
                    v.add(at if message.content else f"{at}.text", "must not be empty")
                elif len(part.text) > limits.max_text_chars:
                    v.add(at, f"at most {limits.max_text_chars} characters")
            elif kind == "image":
                images += 1
                _image(part.image, f"{at}.image", limits, v)
            elif kind == "tool_call":
                _history_tool_call(part.tool_call, f"{at}.tool_call", seen_calls, open_calls, i, v)
            elif kind == "tool_result":
                images += _tool_result(part.tool_result, f"{at}.tool_result", open_calls, limits, v)
            elif kind == "reasoning":
                if not (part.reasoning.text or part.reasoning.encrypted_content or part.signature):
                    v.add(f"{at}.reasoning", "needs text, encrypted_content or a signature")
    if open_calls:
        _unanswered(open_calls, open_since, v)
    if images > limits.max_images:
        v.add("messages", f"at most {limits.max_images} images per request")
    if not non_system:
        v.add("messages", "needs at least one user or assistant message")


def _history_tool_call(
    call: content_pb2.ToolCall,
    at: str,
    seen: set[str],
    open_calls: dict[str, int],
    index: int,
    v: Violations,
) -> None:
    if not call.id:
        v.add(f"{at}.id", "is required: the id the model gave the call")
    elif call.id in seen:
        v.add(f"{at}.id", f"tool call id {call.id!r} is used twice in the conversation")
    else:
        seen.add(call.id)
        open_calls[call.id] = index
    if not call.name:
        v.add(f"{at}.name", "is required")
    if call.arguments:
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            v.add(
                f"{at}.arguments",
                "must be a JSON object (or empty) to be sent back: repair the model's arguments",
            )


def _tool_result(
    result: content_pb2.ToolResult, at: str, open_calls: dict[str, int], limits: Limits, v: Violations
) -> int:
    """Checks one tool result; returns how many images it holds (they count towards the limit)."""
    if not result.tool_call_id:
        v.add(f"{at}.tool_call_id", "is required: the id of the tool call this answers")
    elif result.tool_call_id not in open_calls:
        v.add(
            f"{at}.tool_call_id",
            f"{result.tool_call_id!r} is not a tool call of the assistant message before, "
            "or was answered already",
        )
    else:
        del open_calls[result.tool_call_id]
    if result.content and result.parts:
        v.add(at, "set content or parts, not both")
    images = 0
    for k, part in enumerate(result.parts):
        where = f"{at}.parts[{k}]"
        kind = part.WhichOneof("data")
        if kind == "image":
            images += 1
            _image(part.image, f"{where}.image", limits, v)
        elif kind == "text":
            if len(part.text) > limits.max_text_chars:
                v.add(f"{where}.text", f"at most {limits.max_text_chars} characters")
        else:
            v.add(where, "set text or image")
    return images


def _unanswered(open_calls: Mapping[str, int], index: int, v: Violations) -> None:
    ids = ", ".join(sorted(open_calls))
    v.add(
        f"messages[{index}]",
        f"tool calls {ids} have no tool_result in the ROLE_TOOL message(s) right after it",
    )


def _image(image: content_pb2.Image, at: str, limits: Limits, v: Violations) -> None:
    source = image.WhichOneof("source")
    if source is None:
        v.add(at, "set data or uri")
        return
    if source == "uri":
        uri = image.uri
        if uri.startswith("data:"):
            decoded = decode_data_url(uri)
            if decoded is None:
                v.add(f"{at}.uri", "is not a valid base64 data: URL")
                return
            mime, data = decoded
            _inline_image(mime or image.mime_type, data, at, limits, v)
        elif not uri.startswith(_URI_SCHEMES) or len(uri) > 4096 or any(c.isspace() for c in uri):
            v.add(f"{at}.uri", "must be an https://, http://, gs:// or data: URI of at most 4096 characters")
        elif image.mime_type and image.mime_type not in _MAGIC:
            v.add(f"{at}.mime_type", f"must be one of {', '.join(_MAGIC)}")
        return
    _inline_image(image.mime_type, image.data, at, limits, v)


def _inline_image(mime: str, data: bytes, at: str, limits: Limits, v: Violations) -> None:
    if not mime:
        v.add(f"{at}.mime_type", "is required with inline data")
    elif mime not in _MAGIC:
        v.add(f"{at}.mime_type", f"must be one of {', '.join(_MAGIC)}")
    if not data:
        v.add(f"{at}.data", "must not be empty")
    elif len(data) > limits.max_image_bytes:
        v.add(f"{at}.data", f"at most {limits.max_image_bytes // (1024 * 1024)} MiB per image")
    elif mime in _MAGIC and not _looks_like(mime, data):
        v.add(f"{at}.data", f"is not a {mime} file (its first bytes do not match)")


def _looks_like(mime: str, data: bytes) -> bool:
    if not data.startswith(_MAGIC[mime]):
        return False
    return mime != "image/webp" or data[8:12] == b"WEBP"


def decode_data_url(uri: str) -> tuple[str, bytes] | None:
    """(mime type, bytes) of a base64 `data:` URL, None if it is not one."""
    match = _DATA_URL.match(uri)
    if match is None or not match.group("b64"):
        return None
    try:
        data = base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return match.group("mime") or "", data


def _tools(tools: Sequence[tool_pb2.Tool], limits: Limits, v: Violations) -> set[str]:
    names: set[str] = set()
    if len(tools) > limits.max_tools:
        v.add("tools", f"at most {limits.max_tools} tools are allowed")
        return names
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        if not tool.HasField("function"):
            v.add(at, "set function")
            continue
        function = tool.function
        if not _FUNCTION_NAME.match(function.name):
            v.add(
                f"{at}.function.name",
                "must be a letter or _, then letters, digits, _ or -; at most 64 characters",
            )
        elif function.name in names:
            v.add(f"{at}.function.name", f"{function.name!r} is declared twice")
        else:
            names.add(function.name)
        if len(function.description) > limits.max_text_chars:
            v.add(f"{at}.function.description", f"at most {limits.max_text_chars} characters")
        if function.HasField("parameters") and f"{at}.function.parameters" not in v:
            why = schema_problem(function.parameters, limits, want_object=True)
            if why:
                v.add(f"{at}.function.parameters", why)
    return names


def _tool_choice(choice: tool_pb2.ToolChoice, names: set[str], has_tools: bool, v: Violations) -> None:
    if not has_tools:
        v.add("tool_choice", "needs tools")
        return
    if choice.mode not in tool_pb2.ToolChoice.Mode.values():
        v.add("tool_choice.mode", "is not a known mode")
    if choice.function_name:
        if choice.mode not in (tool_pb2.ToolChoice.MODE_UNSPECIFIED, tool_pb2.ToolChoice.MODE_REQUIRED):
            v.add("tool_choice.mode", "must be unset or MODE_REQUIRED with function_name")
        if choice.function_name not in names:
            v.add("tool_choice.function_name", f"{choice.function_name!r} is not one of the request's tools")


def _response_format(fmt: generation_pb2.ResponseFormat, limits: Limits, v: Violations) -> None:
    if fmt.type not in generation_pb2.ResponseFormat.Type.values():
        v.add("response_format.type", "is not a known type")
        return
    if fmt.type == generation_pb2.ResponseFormat.TYPE_JSON_SCHEMA:
        if not fmt.HasField("schema"):
            v.add("response_format.schema", "is required for TYPE_JSON_SCHEMA")
        elif "response_format.schema" not in v:
            why = schema_problem(fmt.schema, limits, want_object=False)
            if why:
                v.add("response_format.schema", why)
    elif fmt.HasField("schema"):
        v.add("response_format.schema", "is only allowed with TYPE_JSON_SCHEMA")
    if fmt.name and not _SCHEMA_NAME.match(fmt.name):
        v.add("response_format.name", "letters, digits, _ and -; at most 64 characters")


def schema_problem(schema: struct_pb2.Struct, limits: Limits, *, want_object: bool) -> str:
    """Why `schema` is not a usable JSON Schema ("" when it is)."""
    why = struct_problem(schema)
    if why:
        return why
    text = json_format.MessageToJson(schema, indent=None, sort_keys=True)
    if len(text) > limits.max_schema_bytes:
        return f"at most {limits.max_schema_bytes // 1024} KiB as JSON"
    return _schema_problem(text, want_object)


@functools.lru_cache(maxsize=512)
def _schema_problem(text: str, want_object: bool) -> str:
    # Cached by the schema's JSON: agents send the same tools on every turn.
    import jsonschema  # imported on first use: only requests with schemas pay for it

    schema = integral_numbers(json.loads(text))
    if want_object and schema.get("type", "object") != "object":
        return 'must be an object schema ({"type": "object", ...})'
    # Before the meta-schema check: its "regex" format check runs re.compile,
    # which raises OverflowError (a 500) on `a{99999999999}`.
    for where, pattern in _patterns(schema):
        why = pattern_problem(pattern)
        if why:
            return f"{why} (at {where})" if where else why
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(
            schema
        )
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.path)
        return f"is not a valid JSON Schema: {exc.message}" + (f" (at {path})" if path else "")
    return ""


def _reasoning(
    reasoning: generation_pb2.ReasoningConfig, config: generation_pb2.GenerationConfig, v: Violations
) -> None:
    if reasoning.effort not in generation_pb2.ReasoningConfig.Effort.values():
        v.add("reasoning.effort", "is not a known effort")
    if reasoning.HasField("budget_tokens"):
        if reasoning.effort:
            v.add("reasoning", "set effort or budget_tokens, not both")
        if reasoning.budget_tokens < 0:
            v.add("reasoning.budget_tokens", "must be 0 or more")
        elif config.HasField("max_output_tokens") and reasoning.budget_tokens >= config.max_output_tokens:
            v.add(
                "reasoning.budget_tokens",
                "must be less than generation_config.max_output_tokens (which counts reasoning too)",
            )


def _generation_config(config: generation_pb2.GenerationConfig, v: Violations) -> None:
    def ranged(field: str, low: float, high: float, *, low_open: bool = False) -> None:
        if not config.HasField(field):
            return
        value = getattr(config, field)
        ok = math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
        if not ok:
            bound = "(" if low_open else "["
            v.add(f"generation_config.{field}", f"must be in {bound}{low:g}, {high:g}]")

    if config.HasField("max_output_tokens") and config.max_output_tokens <= 0:
        v.add("generation_config.max_output_tokens", "must be greater than 0")
    ranged("temperature", 0, 2)
    ranged("top_p", 0, 1, low_open=True)
    ranged("presence_penalty", -2, 2)
    ranged("frequency_penalty", -2, 2)
    stops = config.stop_sequences
    if len(stops) > MAX_STOP_SEQUENCES:
        v.add("generation_config.stop_sequences", f"at most {MAX_STOP_SEQUENCES} are allowed")
    elif any(not s for s in stops):
        v.add("generation_config.stop_sequences", "must not contain empty strings")


def _user_id(user_id: str, v: Violations) -> None:
    if len(user_id) > MAX_USER_ID_CHARS:
        v.add("user_id", f"at most {MAX_USER_ID_CHARS} characters")


def _vendor_params(
    request: aigc_service_pb2.ChatRequest | aigc_service_pb2.CompleteRequest, v: Violations
) -> dict[str, Any]:
    if not request.HasField("vendor_params") or "vendor_params" in v:
        return {}
    return integral_numbers(json_format.MessageToDict(request.vendor_params))


# --- strings, Structs and patterns ---------------------------------------------------------


def _strings(msg: ProtoMessage, prefix: str, v: Violations) -> None:
    """NUL in any string field of `msg` (walked field by field, so a field added
    to the proto later is covered too); Structs go to struct_problem."""
    for field, value in msg.ListFields():
        at = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Struct":
            why = struct_problem(value)
            if why:
                v.add(at, why)
        elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            if _is_repeated(field):
                for i, item in enumerate(value):
                    _strings(item, f"{at}[{i}].", v)
            else:
                _strings(value, f"{at}.", v)
        elif field.type == descriptor.FieldDescriptor.TYPE_STRING:
            if not _is_repeated(field):
                if "\0" in value:
                    v.add(at, _NUL)
            else:
                for i, item in enumerate(value):
                    if "\0" in item:
                        v.add(f"{at}[{i}]", _NUL)


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    return field.is_repeated


def struct_problem(struct: struct_pb2.Struct) -> str:
    """Why `struct` cannot be taken ("" when it can): a number JSON cannot
    write (NaN, Infinity: only gRPC can send them, and json_format refuses
    them later), NUL in a key or string, or containers nested deeper than
    MAX_STRUCT_DEPTH. Names the first offending place; iterative, so depth
    costs no recursion."""
    stack: list[tuple[Any, str, int]] = [(struct, "", 1)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_STRUCT_DEPTH:
            return f"nested deeper than {MAX_STRUCT_DEPTH} levels (at {where})"
        if isinstance(node, struct_pb2.Struct):
            for key, value in node.fields.items():
                inner = f"{where}.{key}" if where else key
                if "\0" in key:
                    return f"keys {_NUL} (at {inner!r})"
                stack.append((value, inner, depth))
        elif isinstance(node, struct_pb2.ListValue):
            stack.extend((value, f"{where}[{i}]", depth) for i, value in enumerate(node.values))
        else:
            kind = node.WhichOneof("kind")
            if kind == "number_value" and not math.isfinite(node.number_value):
                return f"must not hold NaN or Infinity, which JSON cannot carry (at {where})"
            if kind == "string_value" and "\0" in node.string_value:
                return f"strings {_NUL} (at {where})"
            if kind == "struct_value":
                stack.append((node.struct_value, where, depth + 1))
            elif kind == "list_value":
                stack.append((node.list_value, where, depth + 1))
    return ""


def json_depth_problem(value: Any) -> str:
    """struct_problem's nesting rule for plain JSON (the OpenAI door checks its
    bodies before building a Struct, which would fail deeper than protobuf allows)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_STRUCT_DEPTH:
                return f"nested deeper than {MAX_STRUCT_DEPTH} levels"
            items = node.values() if isinstance(node, dict) else node
            stack.extend((item, depth + 1) for item in items)
    return ""


def _patterns(schema: Any) -> Iterator[tuple[str, str]]:
    """(where, regex) of every `pattern` and `patternProperties` key in a schema."""
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                inner = f"{where}/{key}" if where else key
                if key == "pattern" and isinstance(value, str):
                    yield inner, value
                elif key == "patternProperties" and isinstance(value, dict):
                    yield from ((f"{inner}/{regex}", regex) for regex in value)
                stack.append((value, inner))
        elif isinstance(node, list):
            stack.extend((item, f"{where}/{i}") for i, item in enumerate(node))


_REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the refusal says why; no absl line on stderr per request
_RE2_OPTIONS.max_mem = 1 << 20  # a compiled pattern's memory: refused past 1 MiB


@functools.lru_cache(maxsize=1024)
def pattern_problem(pattern: str) -> str:
    """Why a schema `pattern` is refused ("" when it is fine).

    Patterns run where we cannot see them (vendors' constrained decoding,
    llama.cpp's grammar, the caller's own validator), so we take only what
    every engine can run in linear time: what RE2 compiles (no backreferences
    or lookaround, repetition counts at most 1000, nested ones too), and what
    Python's `re` compiles (jsonschema's check; RE2 reads an over-long count
    such as {99999999999} as literal text, where other engines overflow)."""
    why = (
        "pattern must be a regular expression in RE2 syntax (no lookaround or backreferences, "
        f"repetition counts at most {MAX_PATTERN_REPEAT})"
    )
    # RE2 also reads a count past 2**31 as literal text; Python's re and JavaScript
    # take {4294967294} as a count: refused whatever an engine makes of it.
    for low, high in _REPEAT.findall(pattern):
        if int(low) > MAX_PATTERN_REPEAT or (high and int(high) > MAX_PATTERN_REPEAT):
            return why
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error:
        return why
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError, ValueError):
        return why
    return ""


# --- stage 2: against the chosen model ---------------------------------------------------------


def needed_capabilities(request: aigc_service_pb2.ChatRequest) -> dict[int, str]:
    """Capability -> the first field of the request that needs it."""
    needs: dict[int, str] = {}
    if request.tools:
        needs[model_pb2.CAPABILITY_TOOLS] = "tools"
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.parts):
            kind = part.WhichOneof("data")
            if kind == "image":
                needs.setdefault(model_pb2.CAPABILITY_VISION, f"messages[{i}].parts[{j}].image")
            elif kind in ("tool_call", "tool_result"):
                needs.setdefault(model_pb2.CAPABILITY_TOOLS, f"messages[{i}].parts[{j}].{kind}")
            if kind == "tool_result":
                for k, inner in enumerate(part.tool_result.parts):
                    if inner.WhichOneof("data") == "image":
                        field = f"messages[{i}].parts[{j}].tool_result.parts[{k}].image"
                        needs.setdefault(model_pb2.CAPABILITY_VISION, field)
    fmt = request.response_format.type
    if fmt == generation_pb2.ResponseFormat.TYPE_JSON:
        needs[model_pb2.CAPABILITY_JSON_OUTPUT] = "response_format.type"
    elif fmt == generation_pb2.ResponseFormat.TYPE_JSON_SCHEMA:
        needs[model_pb2.CAPABILITY_JSON_SCHEMA] = "response_format.type"
    if request.HasField("reasoning"):
        needs[model_pb2.CAPABILITY_REASONING] = "reasoning"
    return needs


def check_capabilities(
    request: aigc_service_pb2.ChatRequest, model: str, capabilities: Iterable[int]
) -> None:
    have = set(capabilities)
    for capability, field in needed_capabilities(request).items():
        if capability not in have:
            raise CapabilityNotSupported(
                model, model_pb2.Capability.Name(capability), field, _CAPABILITY_TEXT[capability]
            )


def check_vendor_params(params: Mapping[str, Any], reserved: Iterable[str], v: Violations) -> None:
    """Adds to `v` the vendor_params keys that the typed request controls at this provider.

    `reserved` holds body paths: "messages" (the whole key), or
    "generationConfig.maxOutputTokens" (that key inside an object the
    provider merges vendor_params into).
    """
    for path in reserved:
        node: Any = params
        keys = path.split(".")
        for depth, key in enumerate(keys):
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
            if depth == len(keys) - 1 or not isinstance(node, Mapping):
                field = ".".join(keys[: depth + 1])
                v.add(f"vendor_params.{field}", "is set through the typed request fields, not vendor_params")
                break


__all__ = [
    "Violations",
    "check_capabilities",
    "check_chat",
    "check_complete",
    "check_vendor_params",
    "decode_data_url",
    "json_depth_problem",
    "needed_capabilities",
    "pattern_problem",
    "schema_problem",
    "struct_problem",
]
