"""Request checks on their own: every violation, with its field path."""

from __future__ import annotations

import base64
import json

import pytest

from aigc.v1 import model_pb2
from server.core.limits import Limits
from server.core.validation import Violations, check_capabilities, check_chat, check_vendor_params
from server.errors import CapabilityNotSupported
from tests.conformance.requests import WEATHER, chat, user

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 16


def violations(request, limits: Limits | None = None) -> dict[str, str]:
    v = Violations()
    check_chat(request, limits or Limits(), v)
    return dict(v)


def image(**fields) -> dict:
    if "data" in fields and isinstance(fields["data"], bytes):
        fields["data"] = base64.b64encode(fields["data"]).decode()
    return {"role": "ROLE_USER", "parts": [{"text": "look"}, {"image": fields}]}


def call(id: str, args: str = '{"city": "Paris"}') -> dict:
    return {"tool_call": {"id": id, "name": "get_weather", "arguments": args}}


def result(id: str) -> dict:
    return {"tool_result": {"tool_call_id": id, "content": "18C"}}


def test_a_good_multi_turn_tool_request_passes():
    request = chat(
        user("weather?"),
        {"role": "ROLE_ASSISTANT", "parts": [call("a"), call("b")]},
        {"role": "ROLE_TOOL", "parts": [result("a")]},
        {"role": "ROLE_TOOL", "parts": [result("b")]},
        {"role": "ROLE_ASSISTANT", "content": "18C twice."},
        user("thanks"),
        tools=[WEATHER],
        tool_choice={"mode": "MODE_AUTO"},
    )
    assert violations(request) == {}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": "ROLE_USER", "content": "x", "parts": [{"text": "y"}]}, "messages[0].content"),
        ({"role": "ROLE_USER"}, "messages[0].parts"),
        ({"role": "ROLE_USER", "parts": [{}]}, "messages[0].parts[0]"),
        ({"role": "ROLE_USER", "parts": [{"text": ""}]}, "messages[0].parts[0].text"),
        (
            {"role": "ROLE_SYSTEM", "parts": [image(mime_type="image/png", data=PNG)["parts"][1]]},
            "messages[0].parts[0].image",
        ),
        ({"role": "ROLE_USER", "parts": [call("a")]}, "messages[0].parts[0].tool_call"),
        ({"role": "ROLE_USER", "parts": [{"text": "x", "signature": "s"}]}, "messages[0].parts[0].signature"),
        ({"role": "ROLE_ASSISTANT", "parts": [{"reasoning": {}}]}, "messages[0].parts[0].reasoning"),
        ({"role": 42, "content": "x"}, "messages[0].role"),
    ],
    ids=[
        "content-and-parts",
        "empty",
        "no-data",
        "empty-text",
        "image-in-system",
        "call-in-user",
        "user-signature",
        "empty-reasoning",
        "unknown-role",
    ],
)
def test_message_shape_violations(message, field):
    found = violations(
        chat(user("hi"), message) if message.get("role") != "ROLE_SYSTEM" else chat(message, user("hi"))
    )
    shifted = field.replace("messages[0]", "messages[1]") if message.get("role") != "ROLE_SYSTEM" else field
    assert shifted in found, found


@pytest.mark.parametrize(
    ("fields", "field", "why"),
    [
        ({"mime_type": "image/png", "data": JPEG}, "data", "is not a image/png file"),
        ({"mime_type": "image/bmp", "data": PNG}, "mime_type", "must be one of"),
        ({"data": PNG}, "mime_type", "is required"),
        ({"mime_type": "image/png", "uri": "file:///etc/passwd"}, "uri", "https://"),
        ({"uri": "data:image/png;base64,!!!"}, "uri", "not a valid base64"),
        ({"uri": "data:image/png;base64," + base64.b64encode(JPEG).decode()}, "data", "is not a image/png"),
        ({}, "", "set data or uri"),
    ],
    ids=["magic-mismatch", "mime", "no-mime", "file-uri", "bad-data-url", "data-url-mismatch", "no-source"],
)
def test_image_violations(fields, field, why):
    found = violations(chat(image(**fields)))
    key = "messages[0].parts[1].image" + (f".{field}" if field else "")
    assert why in found.get(key, ""), found


def test_image_size_limit():
    found = violations(
        chat(image(mime_type="image/png", data=PNG + b"\0" * 2048)), Limits(max_image_bytes=1024)
    )
    assert "at most" in found["messages[0].parts[1].image.data"]


def test_tool_results_must_answer_the_calls_just_before():
    request = chat(
        user("weather?"),
        {"role": "ROLE_ASSISTANT", "parts": [call("a"), call("b")]},
        {"role": "ROLE_TOOL", "parts": [result("a"), result("zzz")]},
        tools=[WEATHER],
    )
    found = violations(request)
    assert "'zzz' is not a tool call" in found["messages[2].parts[1].tool_result.tool_call_id"]
    assert "tool calls b have no tool_result" in found["messages[1]"]


def test_a_result_answers_once_and_ids_are_unique():
    request = chat(
        user("weather?"),
        {"role": "ROLE_ASSISTANT", "parts": [call("a"), call("a")]},
        {"role": "ROLE_TOOL", "parts": [result("a"), result("a")]},
        tools=[WEATHER],
    )
    found = violations(request)
    assert "used twice" in found["messages[1].parts[1].tool_call.id"]
    assert "answered already" in found["messages[2].parts[1].tool_result.tool_call_id"]


def test_history_tool_call_arguments_must_be_an_object():
    request = chat(
        user("weather?"),
        {"role": "ROLE_ASSISTANT", "parts": [call("a", '{"city": "Par')]},
        {"role": "ROLE_TOOL", "parts": [result("a")]},
        tools=[WEATHER],
    )
    assert "JSON object" in violations(request)["messages[1].parts[0].tool_call.arguments"]


@pytest.mark.parametrize(
    ("tools", "field", "why"),
    [
        ([{"function": {"name": "9lives"}}], "tools[0].function.name", "a letter or _"),
        ([WEATHER, WEATHER], "tools[1].function.name", "declared twice"),
        ([{}], "tools[0]", "set function"),
        (
            [{"function": {"name": "f", "parameters": {"type": "string"}}}],
            "tools[0].function.parameters",
            "object schema",
        ),
        (
            [{"function": {"name": "f", "parameters": {"type": "object", "properties": 3}}}],
            "tools[0].function.parameters",
            "not a valid JSON Schema",
        ),
    ],
    ids=["name", "duplicate", "no-function", "not-object", "malformed-schema"],
)
def test_tool_declaration_violations(tools, field, why):
    assert why in violations(chat(user("hi"), tools=tools)).get(field, ""), field


def test_schema_and_tool_count_limits():
    big = {"function": {"name": "f", "parameters": {"type": "object", "description": "x" * 5000}}}
    assert (
        "KiB"
        in violations(chat(user("hi"), tools=[big]), Limits(max_schema_bytes=4096))[
            "tools[0].function.parameters"
        ]
    )
    many = [{"function": {"name": f"f{i}"}} for i in range(5)]
    assert "at most 4 tools" in violations(chat(user("hi"), tools=many), Limits(max_tools=4))["tools"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tool_choice": {"mode": "MODE_REQUIRED"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"function_name": "nope"}}, "tool_choice.function_name"),
        (
            {"tools": [WEATHER], "tool_choice": {"function_name": "get_weather", "mode": "MODE_NONE"}},
            "tool_choice.mode",
        ),
        ({"response_format": {"type": "TYPE_JSON_SCHEMA"}}, "response_format.schema"),
        ({"response_format": {"type": "TYPE_JSON", "schema": {"type": "object"}}}, "response_format.schema"),
        ({"response_format": {"type": "TYPE_JSON_SCHEMA", "schema": {"type": 12}}}, "response_format.schema"),
        (
            {"response_format": {"type": "TYPE_JSON_SCHEMA", "schema": {}, "name": "a b"}},
            "response_format.name",
        ),
        ({"reasoning": {"effort": "EFFORT_LOW", "budget_tokens": 1024}}, "reasoning"),
        (
            {"reasoning": {"budget_tokens": 4096}, "generation_config": {"max_output_tokens": 1000}},
            "reasoning.budget_tokens",
        ),
    ],
    ids=[
        "choice-without-tools",
        "unknown-function",
        "named-with-none",
        "schema-missing",
        "schema-without-type",
        "schema-malformed",
        "schema-name",
        "effort-and-budget",
        "budget-over-max",
    ],
)
def test_option_violations(fields, field):
    assert field in violations(chat(user("hi"), **fields))


def test_message_and_image_count_limits():
    assert "at most 3 messages" in violations(chat(*[user("x")] * 4), Limits(max_messages=3))["messages"]
    images = chat(*[image(mime_type="image/png", data=PNG)] * 3)
    assert "at most 2 images" in violations(images, Limits(max_images=2))["messages"]


def test_vendor_params_reserved_paths_top_level_and_nested():
    v = Violations()
    reserved = {"contents", "generationConfig.maxOutputTokens"}
    check_vendor_params({"contents": [], "generationConfig": {"maxOutputTokens": 1, "topK": 3}}, reserved, v)
    assert set(v) == {"vendor_params.contents", "vendor_params.generationConfig.maxOutputTokens"}
    v = Violations()
    check_vendor_params({"generationConfig": "replace it all"}, reserved, v)
    assert set(v) == {"vendor_params.generationConfig"}
    v = Violations()
    check_vendor_params({"generationConfig": {"topK": 3}, "safetySettings": []}, reserved, v)
    assert not v


def test_capabilities_name_the_first_field_that_needs_them():
    request = chat(image(mime_type="image/png", data=PNG), response_format={"type": "TYPE_JSON"})
    with pytest.raises(CapabilityNotSupported) as caught:
        check_capabilities(request, "tiny", [model_pb2.CAPABILITY_JSON_OUTPUT])
    error = caught.value
    assert error.metadata == {
        "model": "tiny",
        "capability": "CAPABILITY_VISION",
        "field": "messages[0].parts[1].image",
    }
    assert "tiny" in error.message and "image input" in error.message
    check_capabilities(request, "big", [model_pb2.CAPABILITY_VISION, model_pb2.CAPABILITY_JSON_OUTPUT])


def test_schema_check_is_cached_for_repeated_tools():
    from server.core import validation

    validation._schema_problem.cache_clear()
    request = chat(user("hi"), tools=[WEATHER])
    for _ in range(3):
        assert violations(request) == {}
    assert validation._schema_problem.cache_info().hits == 2
    assert json.loads(json.dumps(WEATHER))  # the fixture itself is plain JSON


def test_nul_characters_are_refused_wherever_text_goes_to_a_model():
    from aigc.v1 import aigc_service_pb2
    from server.core.validation import check_complete

    request = chat(
        user("a\0b"),
        {"role": "ROLE_ASSISTANT", "parts": [{"text": "ok"}, call("a")]},
        {"role": "ROLE_TOOL", "parts": [{"tool_result": {"tool_call_id": "a", "content": "x\0"}}]},
        {"role": "ROLE_USER", "parts": [{"text": "fine"}, {"text": "\0"}]},
        tools=[WEATHER],
    )
    assert violations(request) == {
        "messages[0].content": "must not contain NUL (U+0000) characters",
        "messages[2].parts[0].tool_result.content": "must not contain NUL (U+0000) characters",
        "messages[3].parts[1].text": "must not contain NUL (U+0000) characters",
    }
    v = Violations()
    check_complete(aigc_service_pb2.CompleteRequest(prompt="once\0"), Limits(), v)
    assert dict(v) == {"prompt": "must not contain NUL (U+0000) characters"}
