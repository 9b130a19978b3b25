"""Schemathesis hooks and checks for `make fuzz` (loaded via SCHEMATHESIS_HOOKS by run_fuzz.py).

Two checks on top of schemathesis' own (see schemathesis.toml):

- `error_is_google_rpc_status`: every response with an HTTP error status is
  `application/json` holding a `google.rpc.Status` - an int `code` (1..16), a
  non-empty `message` and `details` with an `ErrorInfo` that has an
  UPPER_SNAKE `reason` and a `domain` - whoever made it: the server through the
  transcoder, or Envoy itself (local_reply_config).
- `stream_is_sse_of_chat_messages`: a 200 from a streaming method is
  `text/event-stream` with only `data: {json}` events, whose last one ends the
  answer (`finish_reason`) or carries an `error` that is such a Status.

Hooks: the fuzzer's copy of the spec gets the rules its descriptions state
in words (DOCUMENTED_RULES); the proto3 JSON string format `int64` gets a
generator; and generation stays cheap - the local model writes at most
MAX_OUTPUT_TOKENS tokens (the stack caps it too, AIGC_LOCAL_MAX_OUTPUT_TOKENS).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.fuzz.env import MAX_OUTPUT_TOKENS
from tests.fuzz.status import assert_status

INT32_MAX = 2**31 - 1


# proto3 JSON writes int64 as a decimal string (`type: string, format: int64`
# in the spec); schemathesis knows int64 only as an integer format.
schemathesis.openapi.format("int64", st.integers(-(2**63), 2**63 - 1).map(str))


#: Rules the spec states in words only (each field's description), as JSON
#: Schema, so positive cases obey them and negative cases break them - and
#: negative_data_rejection then checks the server enforces each one. The
#: generator of the spec (tools/protoc_gen_openapi.py) could emit these itself.
DOCUMENTED_RULES: dict[str, dict[str, dict[str, Any]]] = {
    "aigc.v1.ChatRequest": {
        "messages": {"minItems": 1},
        "user_id": {"maxLength": 256},
    },
    "aigc.v1.CompleteRequest": {"prompt": {"minLength": 1}, "user_id": {"maxLength": 256}},
    "aigc.v1.GenerationConfig": {
        # "> 0 when set" - but 0 is proto3's "not set", so only negatives are wrong.
        "max_output_tokens": {"minimum": 0},
        "temperature": {"minimum": 0, "maximum": 2},
        "top_p": {"minimum": 0, "maximum": 1},  # (0, 1], and 0 is "not set"
        "presence_penalty": {"minimum": -2, "maximum": 2},
        "frequency_penalty": {"minimum": -2, "maximum": 2},
        # No maxItems (4 stop sequences, 128 tools, both enforced by the server):
        # JSON Schema counts list items before the transcoder drops nulls.
        "stop_sequences": {
            "items": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "null"}, {"type": "array"}]},
        },
    },
    "aigc.v1.FunctionDeclaration": {"name": {"pattern": "^[A-Za-z_][A-Za-z0-9_-]{0,63}$"}},
}


#: What proto3 JSON parsing (the transcoder) accepts besides the spec's own
#: form of a field, by the spec's type: numbers as strings and integral floats
#: (`"4"`, `4.0`), int64 strings as numbers, bools as "true"/"false", `null`
#: for any field (= not set) or list item (dropped) - and, for a repeated
#: field, a bare item (`"stop_sequences": "x"` is `["x"]`) and nested lists
#: (`[["a"], "b"]` is `["a", "b"]`), flattened by the transcoder.
PROTO3_JSON_ALSO: dict[str, list[dict[str, Any]]] = {
    "integer": [{"type": "number"}, {"type": "string"}],
    "number": [{"type": "string"}],
    "boolean": [{"type": "string", "enum": ["true", "false"]}],
    "int64 string": [{"type": "number"}],
}
_CORE = ("type", "format", "enum", "items", "additionalProperties", "$ref")


def _as_proto3_json(field: dict[str, Any]) -> None:
    """Rewrite one field's schema, in place, to every JSON form the transcoder accepts for it."""
    core = {key: field.pop(key) for key in _CORE if key in field}
    also = []
    if isinstance(core.get("items"), dict):
        item = core["items"]
        also.append(json.loads(json.dumps(item)))  # a bare item is a list of one
        _as_proto3_json(item)
        item["anyOf"].append({"type": "array"})  # nested lists are flattened
    kind = core.get("type")
    if kind == "string" and core.get("format") in ("int64", "uint64"):
        kind = "int64 string"
    field["anyOf"] = [core, *also, *PROTO3_JSON_ALSO.get(kind, []), {"type": "null"}]


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    """Make the fuzzer's copy of the spec (never the served file) say what the
    gateway accepts - so that negative_data_rejection flags only what should
    be refused - and what the server requires:

    - every JSON form proto3 JSON accepts for a field (PROTO3_JSON_ALSO), and
      enums as numbers;
    - no empty property names: the transcoder refuses a field named ""
      ("Proto fields must have a name"), which JSON Schema allows;
    - the rules the descriptions state in words (DOCUMENTED_RULES), and the
      fields "required in requests": a message's role (never ROLE_UNSPECIFIED),
      a tool's function and its name.
    """
    schemas = raw_schema.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        if not name.startswith("aigc.v1."):
            continue
        if schema.get("type") == "object":
            schema.setdefault("propertyNames", {"minLength": 1})
            for field in schema.get("properties", {}).values():
                _as_proto3_json(field)
        elif "enum" in schema:  # an enum: its value names, or any number (unknown ones are the server's)
            schema["anyOf"] = [{"type": "string", "enum": schema.pop("enum")}, {"type": "integer"}]
            schema.pop("type", None)
    for name, fields in DOCUMENTED_RULES.items():
        for field, rules in fields.items():
            schemas[name]["properties"][field].update(rules)
    roles = [r for r in schemas["aigc.v1.Role"]["anyOf"][0]["enum"] if r != "ROLE_UNSPECIFIED"]
    schemas["aigc.v1.Message"]["properties"]["role"] = {
        "anyOf": [{"type": "string", "enum": roles}, {"type": "integer", "minimum": 1, "maximum": len(roles)}]
    }
    for name, required in [
        ("aigc.v1.Message", "role"),
        ("aigc.v1.Tool", "function"),
        ("aigc.v1.FunctionDeclaration", "name"),
    ]:
        schemas[name]["required"] = sorted({*schemas[name].get("required", []), required})


#: The `oneof data` of Part: at most one may be set.
PART_DATA = ("text", "image", "tool_call", "tool_result", "reasoning")


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Rules JSON Schema can only say with `not` (which generators do badly),
    applied to positive cases only, where they keep a valid case valid: a
    message sets `content` or `parts`, not both; a part sets one `data` field."""
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE or not isinstance(case.body, dict):
        return case
    for message in case.body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        if "content" in message:
            message.pop("parts", None)
        for part in message.get("parts") or []:
            if isinstance(part, dict):
                for extra in [key for key in PART_DATA if key in part][1:]:
                    del part[extra]
    return case


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    """Keep generation cheap without changing whether a case is valid: an
    in-range `max_output_tokens` above MAX_OUTPUT_TOKENS is folded into
    1..MAX_OUTPUT_TOKENS (still an in-range int); anything else is left alone."""
    config = body.get("generation_config") if isinstance(body, dict) else None
    if isinstance(config, dict):
        tokens = config.get("max_output_tokens")
        if type(tokens) is int and MAX_OUTPUT_TOKENS < tokens <= INT32_MAX:
            config["max_output_tokens"] = tokens % MAX_OUTPUT_TOKENS + 1
    return body


def _header(response: Any, name: str) -> str:
    values = response.headers.get(name) or [""]
    return values[0]


@schemathesis.check
def error_is_google_rpc_status(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400:
        return None
    where = f"HTTP {response.status_code}"
    content_type = _header(response, "content-type")
    assert content_type == "application/json", f"{where}: content-type {content_type!r}, not application/json"
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{where}: body is not JSON ({exc}): {response.content[:200]!r}") from None
    assert_status(body, where)
    return True


@schemathesis.check
def stream_is_sse_of_chat_messages(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code != 200 or not case.operation.path.endswith(":streamGenerate"):
        return None
    content_type = _header(response, "content-type")
    assert content_type.startswith("text/event-stream"), f"stream content-type {content_type!r}"
    if getattr(response, "stream_cut_short", False):
        return True  # schemathesis stopped reading (max-stream-events): no last event to judge
    events = []
    for line in response.content.decode("utf-8").split("\n"):
        if not line:
            continue
        assert line.startswith("data: "), f"not an SSE data line: {line[:200]!r}"
        events.append(json.loads(line.removeprefix("data: ")))
    assert events, "a 200 stream with no event"
    last = events[-1]
    if "error" in last:
        assert_status(last["error"], "the stream's last event")
    else:
        finish = last.get("finish_reason")
        assert finish and finish != "FINISH_REASON_UNSPECIFIED", f"last event has no finish_reason: {last}"
    return True
