"""Tool results that carry images (ToolResult.parts): checked like user images, needing
CAPABILITY_VISION, and translated per vendor - Anthropic inside the tool_result, Gemini as
parts of the function-response turn, OpenAI-protocol providers (tool messages take text only)
as a user message right after the tool messages."""

from __future__ import annotations

import base64

import pytest

from aigc.v1 import model_pb2
from server.api.anthropic_door import wire as anthropic_door
from server.api.openai_compat import responses_wire
from server.api.openai_compat import wire as openai_door
from server.core.limits import Limits
from server.core.validation import Violations, check_capabilities, check_chat
from server.errors import CapabilityNotSupported
from server.providers.anthropic import wire as anthropic
from server.providers.gemini import wire as gemini
from server.providers.local import LOCAL_CAPABILITIES
from server.providers.openai import wire as openai
from tests.conformance.requests import chat, user

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
B64 = base64.b64encode(PNG).decode()
CALL = {
    "role": "ROLE_ASSISTANT",
    "parts": [{"tool_call": {"id": "c1", "name": "screenshot", "arguments": "{}"}}],
}


def with_result(*parts: dict, content: str = "") -> object:
    result = {"tool_call_id": "c1", "parts": list(parts)}
    if content:
        result["content"] = content
    return chat(user("show me"), CALL, {"role": "ROLE_TOOL", "parts": [{"tool_result": result}]})


SHOT = with_result({"text": "the screen:"}, {"image": {"mime_type": "image/png", "data": B64}})


def violations(request) -> dict[str, str]:
    v = Violations()
    check_chat(request, Limits(), v)
    return dict(v)


def test_an_image_in_a_tool_result_is_checked_and_needs_vision():
    assert violations(SHOT) == {}
    bad = with_result({"image": {"mime_type": "image/png", "data": base64.b64encode(b"not a png").decode()}})
    assert "messages[2].parts[0].tool_result.parts[0].image.data" in violations(bad)
    both = with_result({"text": "x"}, content="y")
    assert "messages[2].parts[0].tool_result" in violations(both)
    # The built-in local model has no vision: it refuses, naming the image.
    with pytest.raises(CapabilityNotSupported) as caught:
        check_capabilities(SHOT, "smollm2", LOCAL_CAPABILITIES)
    assert caught.value.metadata["field"] == "messages[2].parts[0].tool_result.parts[1].image"
    check_capabilities(SHOT, "vision", [model_pb2.CAPABILITY_TOOLS, model_pb2.CAPABILITY_VISION])


def test_anthropic_gets_the_image_inside_the_tool_result():
    _, sent = anthropic.messages(SHOT.messages)
    (block,) = sent[-1]["content"]
    assert block["type"] == "tool_result" and block["tool_use_id"] == "c1"
    assert block["content"] == [
        {"type": "text", "text": "the screen:"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}},
    ]


def test_gemini_gets_the_image_as_a_part_of_the_function_response_turn():
    turn = gemini.contents(SHOT.messages)[-1]
    assert turn["role"] == "user"
    response, image = turn["parts"]
    assert response["functionResponse"]["response"] == {"result": "the screen:"}
    assert image == {"inlineData": {"mimeType": "image/png", "data": B64}}


def test_openai_protocol_gets_a_user_message_with_the_image_after_the_tool_messages():
    sent = openai.messages(SHOT.messages)
    assert sent[-2] == {"role": "tool", "tool_call_id": "c1", "content": "the screen:"}
    assert sent[-1]["role"] == "user"
    assert sent[-1]["content"][-1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{B64}"},
    }
    assert "c1" in sent[-1]["content"][0]["text"]


def test_the_doors_take_images_in_tool_results():
    url = f"data:image/png;base64,{B64}"
    chat_request, _, _ = openai_door.chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "show me"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "s"}}],
                },
                {
                    "role": "tool",
                    "tool_call_id": "c1",
                    "content": [
                        {"type": "text", "text": "the screen:"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                },
            ],
        }
    )
    result = chat_request.messages[2].parts[0].tool_result
    assert [p.WhichOneof("data") for p in result.parts] == ["text", "image"] and result.parts[
        1
    ].image.uri == url
    anthropic_request, _ = anthropic_door.messages_request(
        {
            "model": "m",
            "max_tokens": 9,
            "messages": [
                {"role": "user", "content": "show me"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "c1", "name": "s", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "c1",
                            "content": [
                                {"type": "text", "text": "the screen:"},
                                {
                                    "type": "image",
                                    "source": {"type": "base64", "media_type": "image/png", "data": B64},
                                },
                            ],
                        }
                    ],
                },
            ],
        }
    )
    result = anthropic_request.messages[2].parts[0].tool_result
    assert result.parts[1].image.data == PNG and result.parts[1].image.mime_type == "image/png"
    responses_request, _ = responses_wire.responses_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "show me"},
                {"type": "function_call", "call_id": "c1", "name": "s", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [
                        {"type": "input_text", "text": "the screen:"},
                        {"type": "input_image", "image_url": url},
                    ],
                },
            ],
        }
    )
    result = responses_request.messages[2].parts[0].tool_result
    assert [p.WhichOneof("data") for p in result.parts] == ["text", "image"]
    for request in (chat_request, anthropic_request, responses_request):
        assert violations(request) == {}
