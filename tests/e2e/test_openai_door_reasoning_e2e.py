"""Reasoning and its signatures through the OpenAI-compatible door: a whole tool loop
with the official openai SDK, through the real Envoy and server, against fakes that
refuse a second turn without the signatures exactly as Anthropic and Gemini 3 do
(tests/fakes: anthropic_fake.thinking_check, gemini_fake.signature_check).

The door carries them in OpenRouter's `reasoning_details` (README, "OpenAI-compatible door",
says why): the client sends the assistant message back as it got it, and the
signatures reach the vendor where it wants them - Claude's turn starting with its
signed thinking block, Gemini's function call with its thoughtSignature.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.e2e.conftest import E2E, TIMEOUT
from tests.fakes import anthropic_fake as an
from tests.fakes import gemini_fake as gm

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
QUESTION = {"role": "user", "content": "Weather in Paris?"}


@pytest.fixture
def client(e2e: E2E) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{e2e.stack.http}/openai/v1", api_key="unused", max_retries=0, timeout=TIMEOUT
    )


def tool_result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": '{"celsius": 18}'}


def test_a_claude_thinking_tool_loop_through_the_door(e2e: E2E, client: openai.OpenAI):
    signature = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxvbT7Ht2b0lUnZ0YoiMJ7d"
    first = an.answer(
        [
            an.thinking_block(0, ["I should call ", "get_weather."], signature),
            an.tool_use_block(1, "toolu_1", "get_weather", ['{"city": "Paris"}']),
        ],
        stop_reason="tool_use",
        usage=an.usage_object(20, 9),
    )
    second = an.answer([an.text_block(0, ["18°C in Paris."])], usage=an.usage_object(40, 6))
    e2e.fakes.anthropic.script(
        an.with_thinking_checked(an.stream(first), {signature}),
        an.with_thinking_checked(an.stream(second), {signature}),
        an.with_thinking_checked(an.stream(second), {signature}),
    )
    ask = {"model": "claude-sonnet-4-5", "tools": TOOLS, "reasoning_effort": "low"}

    reply = client.chat.completions.create(messages=[QUESTION], **ask)
    message = reply.choices[0].message
    assert message.reasoning_content == "I should call get_weather."  # type: ignore[attr-defined]
    assert message.reasoning_details == [  # type: ignore[attr-defined]
        {"type": "reasoning.text", "text": "I should call get_weather.", "signature": signature, "index": 0}
    ]
    (call,) = message.tool_calls or []

    # Without the signature (reasoning_content only), Claude refuses the turn - so does the fake.
    unsigned = message.model_dump(exclude_none=True)
    del unsigned["reasoning_details"]
    with pytest.raises(openai.BadRequestError, match="must start with a thinking block"):
        client.chat.completions.create(messages=[QUESTION, unsigned, tool_result(call.id)], **ask)

    # The client sends the assistant message back as it came (the SDK keeps unknown fields).
    history = [QUESTION, message.model_dump(exclude_none=True), tool_result(call.id)]
    final = client.chat.completions.create(messages=history, **ask)
    assert final.choices[0].message.content == "18°C in Paris."

    sent = e2e.fakes.anthropic.requests[-1].json()["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": "I should call get_weather.", "signature": signature}
    assert sent[1]["type"] == "tool_use" and sent[1]["id"] == "toolu_1"


def test_a_gemini_3_tool_loop_through_the_door_streamed(e2e: E2E, client: openai.OpenAI):
    signature = "CiQB0e2Kb7xLqZ3J1tV9sTq8mR2wY5nP4cD6aF0hG8jK1lM3oQ=="
    first = gm.stream(
        [
            gm.event(
                gm.chunk(
                    [gm.function_call_part("get_weather", {"city": "Paris"}, signature=signature)],
                    finish="STOP",
                    usage=gm.usage_metadata(12, 5),
                )
            )
        ]
    )
    second = gm.stream(gm.stream_events(["18°C ", "in Paris."]))
    e2e.fakes.gemini.script(
        gm.with_signatures_checked(first, {signature}),
        gm.with_signatures_checked(second, {signature}),
        gm.with_signatures_checked(second, {signature}),
    )
    ask = {"model": "gemini-2.5-flash", "tools": TOOLS}

    with client.chat.completions.stream(messages=[QUESTION], **ask) as stream:
        for _ in stream:
            pass
        message = stream.get_final_completion().choices[0].message
    (call,) = message.tool_calls or []
    details = message.model_dump()["reasoning_details"]
    assert details == [{"type": "reasoning.encrypted", "id": call.id, "data": signature, "index": 0}]

    # Without the signature, Gemini 3 refuses the function call turn - so does the fake.
    unsigned = json.loads(message.model_dump_json(exclude_none=True))
    del unsigned["reasoning_details"]
    with pytest.raises(openai.BadRequestError, match="missing a thought_signature"):
        client.chat.completions.create(messages=[QUESTION, unsigned, tool_result(call.id)], **ask)

    history = [QUESTION, json.loads(message.model_dump_json(exclude_none=True)), tool_result(call.id)]
    with client.chat.completions.stream(messages=history, **ask) as stream:
        for _ in stream:
            pass
        assert stream.get_final_completion().choices[0].message.content == "18°C in Paris."

    model_turn = e2e.fakes.gemini.requests[-1].json()["contents"][1]
    assert model_turn["parts"][0]["functionCall"]["name"] == "get_weather"
    assert model_turn["parts"][0]["thoughtSignature"] == signature


def test_reasoning_details_of_the_wrong_shape_are_a_400_naming_the_field(client: openai.OpenAI):
    assistant = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ],
        "reasoning_details": [{"type": "reasoning.encrypted", "id": "nope", "data": "x"}, "text"],
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gemini-2.5-flash", messages=[QUESTION, assistant, tool_result("c1")], tools=TOOLS
        )
    fields = {
        v["field"] for d in caught.value.body["status"]["details"] for v in d.get("field_violations", ())
    }
    assert {"messages[1].reasoning_details[0].id", "messages[1].reasoning_details[1]"} <= fields
