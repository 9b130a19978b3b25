"""The Anthropic Messages door through the real Envoy (:8000/anthropic/v1), with the official
anthropic SDK, unmodified: a full tool round trip and a thinking + signature round trip, on the
Anthropic fake and on a Gemini-backed model, unary and streamed; errors in Anthropic's shape.
"""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest

from tests.e2e.conftest import E2E, TIMEOUT
from tests.fakes import anthropic_fake, gemini_fake, openai_fake

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(e2e: E2E) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{e2e.stack.http}/anthropic", api_key="unused", max_retries=0, timeout=TIMEOUT
    )


def test_a_full_tool_round_trip_with_messages_create(e2e: E2E, client: anthropic.Anthropic):
    e2e.fakes.anthropic.script(
        anthropic_fake.stream(
            anthropic_fake.answer(
                [anthropic_fake.tool_use_block(0, "toolu_1", "get_weather", ['{"city":', ' "Paris"}'])],
                stop_reason="tool_use",
                usage=anthropic_fake.usage_object(12, 7),
            )
        ),
        anthropic_fake.stream(anthropic_fake.message_events(["Sunny in Paris."])),
    )
    question = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(
        model="claude-haiku-4-5", max_tokens=200, system="Be brief.", messages=question, tools=[WEATHER]
    )
    assert first.stop_reason == "tool_use"
    (use,) = first.content
    assert (use.type, use.id, use.name, use.input) == (
        "tool_use",
        "toolu_1",
        "get_weather",
        {"city": "Paris"},
    )
    assert (first.usage.input_tokens, first.usage.output_tokens) == (12, 7)
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "22 C, sunny"}
    second = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=200,
        messages=[
            *question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ],
        tools=[WEATHER],
    )
    assert second.content[0].text == "Sunny in Paris."
    assert second.stop_reason == "end_turn"
    sent = e2e.fakes.anthropic.requests[-1].json()
    assert e2e.fakes.anthropic.requests[0].json()["system"] == "Be brief."
    assert sent["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert sent["messages"][2]["content"][0]["tool_use_id"] == "toolu_1"
    assert sent["messages"][2]["content"][0]["content"] in (
        "22 C, sunny",
        [{"type": "text", "text": "22 C, sunny"}],
    )


def test_thinking_and_its_signature_round_trip_with_messages_stream(e2e: E2E, client: anthropic.Anthropic):
    e2e.fakes.anthropic.script(
        anthropic_fake.stream(
            anthropic_fake.answer(
                [
                    anthropic_fake.thinking_block(0, ["Paris is ", "in France."], "sig-abc=="),
                    anthropic_fake.tool_use_block(1, "toolu_9", "get_weather", ['{"city": "Paris"}']),
                ],
                stop_reason="tool_use",
                usage=anthropic_fake.usage_object(20, 9),
            )
        ),
        anthropic_fake.stream(anthropic_fake.message_events(["Done."])),
    )
    question = [{"role": "user", "content": "Weather in Paris?"}]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=2048, messages=question, tools=[WEATHER], thinking=thinking
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "thinking" in kinds and "signature" in kinds and "input_json" in kinds
    think, use = final.content
    assert (think.type, think.thinking, think.signature) == ("thinking", "Paris is in France.", "sig-abc==")
    assert use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 9
    assert final.usage.input_tokens == 20, "the counts of message_delta reach the SDK's final message"
    sent_first = e2e.fakes.anthropic.requests[-1].json()
    assert sent_first["thinking"]["budget_tokens"] == 1024
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}
    client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=2048,
        thinking=thinking,
        tools=[WEATHER],
        messages=[
            *question,
            {"role": "assistant", "content": final.content},
            {"role": "user", "content": [result]},
        ],
    )
    back = e2e.fakes.anthropic.requests[-1].json()["messages"][1]["content"][0]
    assert back == {"type": "thinking", "thinking": "Paris is in France.", "signature": "sig-abc=="}


def test_a_gemini_model_answers_in_anthropic_shape_and_gets_its_signature_back(
    e2e: E2E, client: anthropic.Anthropic
):
    call = gemini_fake.function_call_part("get_weather", {"city": "Rome"}, signature="gem-sig/+=")
    thought = gemini_fake.text_part("Need the weather.", thought=True, signature="gem-thought-sig")
    usage = gemini_fake.usage_metadata(10, 5, thoughts=3)
    e2e.fakes.gemini.script(
        gemini_fake.stream(
            [gemini_fake.event(gemini_fake.chunk([thought, call], finish="STOP", usage=usage))]
        ),
        gemini_fake.stream(gemini_fake.stream_events(["It is warm."])),
    )
    question = [{"role": "user", "content": "Weather in Rome?"}]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with client.messages.stream(
        model="gemini-2.5-flash", max_tokens=2048, messages=question, tools=[WEATHER], thinking=thinking
    ) as stream:
        final = stream.get_final_message()
    think, use = final.content
    assert (think.thinking, think.signature) == ("Need the weather.", "gem-thought-sig")
    assert (use.name, use.input) == ("get_weather", {"city": "Rome"})
    assert final.stop_reason == "tool_use"
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "warm"}
    answer = client.messages.create(
        model="gemini-2.5-flash",
        max_tokens=2048,
        thinking=thinking,
        tools=[WEATHER],
        messages=[
            *question,
            {"role": "assistant", "content": final.content},
            {"role": "user", "content": [result]},
        ],
    )
    assert answer.content[0].text == "It is warm."
    contents = e2e.fakes.gemini.requests[-1].json()["contents"]
    model_parts = contents[1]["parts"]
    assert {
        "text": "Need the weather.",
        "thought": True,
        "thoughtSignature": "gem-thought-sig",
    } in model_parts
    (called,) = [p for p in model_parts if "functionCall" in p]
    assert called["thoughtSignature"] == "gem-sig/+=", "Gemini's signature on the call came back unchanged"
    (response,) = [p["functionResponse"] for p in contents[2]["parts"]]
    assert response["name"] == "get_weather"


def test_the_local_shape_errors_are_anthropics(e2e: E2E, client: anthropic.Anthropic):
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[], extra_body={"top_k": 3})
    error = bad.value.body["error"]
    assert error["type"] == "invalid_request_error" and error["reason"] == "INVALID_REQUEST"
    assert "top_k" in error["message"] and "messages" in error["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body["error"]["reason"] == "MODEL_NOT_FOUND"


def test_a_vendor_error_mid_stream_is_an_error_event(e2e: E2E, client: anthropic.Anthropic):
    e2e.fakes.openai.script(
        openai_fake.stream([*openai_fake.chat_events(["partial"])[:2], b"data: {not json}\n\n"])
    )
    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        client.messages.stream(
            model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    assert failed.value.body["error"]["reason"].startswith("UPSTREAM_")


def test_bad_json_and_no_model_answer_in_anthropics_shape(e2e: E2E):
    raw = httpx.post(
        f"{e2e.stack.http}/anthropic/v1/messages",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 400
    assert raw.json()["type"] == "error" and raw.json()["error"]["reason"] == "MALFORMED_REQUEST"
    counted = httpx.post(
        f"{e2e.stack.http}/anthropic/v1/messages/count_tokens",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert counted.status_code == 404 and counted.json()["error"]["reason"] == "NOT_OFFERED"


def test_the_access_log_says_which_door_and_the_fallback_holds(e2e: E2E, client: anthropic.Anthropic):
    e2e.fakes.anthropic.script(anthropic_fake.error(529, "overloaded_error", "Overloaded"))
    e2e.fakes.openai.script(openai_fake.stream(openai_fake.chat_events(["from the fallback"])))
    reply = client.messages.with_raw_response.create(
        model="claude-then-gpt", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    message = reply.parse()
    assert message.content[0].text == "from the fallback" and message.model == "gpt-4o-mini"
    request_id = reply.headers["x-request-id"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [
            json.loads(line) for line in e2e.log().splitlines() if request_id in line and line.startswith("{")
        ]
        access = [line for line in lines if line.get("logger") == "aigc.access" and "code" in line]
        if access:
            break
        time.sleep(0.05)
    (line,) = access
    assert (line["surface"], line["method"], line["code"]) == ("anthropic", "Chat", "OK")
    assert line["fallbacks"], "the fallback is recorded as on every surface"
