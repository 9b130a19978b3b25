"""Tool results that carry images (a screenshot tool), through Envoy: the OpenAI chat door takes
image parts in a tool message (LangChain's standard tests send them), the Anthropic door image
blocks in a tool_result; each vendor gets them in its own way (tests/server/core/
test_tool_result_images.py has the translations)."""

from __future__ import annotations

import base64

import anthropic
import openai

from tests.e2e.conftest import E2E, TIMEOUT
from tests.fakes import anthropic_fake, gemini_fake, openai_fake

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
B64 = base64.b64encode(PNG).decode()
URL = f"data:image/png;base64,{B64}"
TOOL = {"type": "function", "function": {"name": "screenshot", "parameters": {"type": "object"}}}


def chat_turns() -> list[dict]:
    return [
        {"role": "user", "content": "What is on the screen?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_s", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}}
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_s",
            "content": [
                {"type": "text", "text": "the screen:"},
                {"type": "image_url", "image_url": {"url": URL}},
            ],
        },
    ]


def test_the_chat_door_takes_an_image_in_a_tool_message_for_anthropic(e2e: E2E):
    client = openai.OpenAI(
        base_url=f"{e2e.stack.http}/openai/v1", api_key="unused", max_retries=0, timeout=TIMEOUT
    )
    e2e.fakes.anthropic.script(anthropic_fake.stream(anthropic_fake.message_events(["A red dot."])))
    reply = client.chat.completions.create(model="claude-haiku-4-5", messages=chat_turns(), tools=[TOOL])
    assert reply.choices[0].message.content == "A red dot."
    (result,) = e2e.fakes.anthropic.requests[-1].json()["messages"][2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "call_s"
    assert result["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": B64},
    }


def test_the_chat_door_takes_an_image_in_a_tool_message_for_openai_and_gemini(e2e: E2E):
    client = openai.OpenAI(
        base_url=f"{e2e.stack.http}/openai/v1", api_key="unused", max_retries=0, timeout=TIMEOUT
    )
    e2e.fakes.openai.script(openai_fake.stream(openai_fake.chat_events(["A dot."])))
    client.chat.completions.create(model="gpt-4o-mini", messages=chat_turns(), tools=[TOOL])
    sent = e2e.fakes.openai.requests[-1].json()["messages"]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_s", "content": "the screen:"}
    assert sent[3]["role"] == "user" and sent[3]["content"][-1]["image_url"]["url"] == URL
    e2e.fakes.gemini.script(gemini_fake.stream(gemini_fake.stream_events(["A dot."])))
    client.chat.completions.create(model="gemini-2.0-flash", messages=chat_turns(), tools=[TOOL])
    turn = e2e.fakes.gemini.requests[-1].json()["contents"][-1]
    assert "functionResponse" in turn["parts"][0]
    assert turn["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": B64}}


def test_the_anthropic_door_takes_an_image_in_a_tool_result(e2e: E2E):
    client = anthropic.Anthropic(
        base_url=f"{e2e.stack.http}/anthropic", api_key="unused", max_retries=0, timeout=TIMEOUT
    )
    e2e.fakes.anthropic.script(anthropic_fake.stream(anthropic_fake.message_events(["A red dot."])))
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}
    reply = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        tools=[{"name": "screenshot", "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": "What is on the screen?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_s", "name": "screenshot", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_s", "content": [image]}],
            },
        ],
    )
    assert reply.content[0].text == "A red dot."
    (result,) = e2e.fakes.anthropic.requests[-1].json()["messages"][2]["content"]
    assert result["content"] == [image]
