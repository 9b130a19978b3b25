"""The OpenAI Responses door through the real Envoy (:8000/openai/v1/responses) with the official
openai SDK, unmodified: `responses.create` and `responses.stream` with a function tool round trip
(on the OpenAI and the Anthropic fakes, reasoning items and their signatures included),
structured output, errors in OpenAI's shape; and the openai-agents SDK in its default (Responses)
mode running an agent with one function tool on the real local model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.conftest import E2E, TIMEOUT
from tests.fakes import anthropic_fake, openai_fake
from tests.proxies.env import isolated_env
from tests.support.stack import Stack, running_stack

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(e2e: E2E) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{e2e.stack.http}/openai/v1", api_key="unused", max_retries=0, timeout=TIMEOUT
    )


def test_a_function_tool_round_trip_with_responses_create(e2e: E2E, client: openai.OpenAI):
    calls = [
        openai_fake.tool_call_delta(0, id="call_7", name="get_weather", arguments='{"city":'),
        openai_fake.tool_call_delta(0, arguments=' "Oslo"}'),
    ]
    e2e.fakes.openai.script(
        openai_fake.stream(openai_fake.delta_events(calls, finish="tool_calls")),
        openai_fake.stream(openai_fake.chat_events(["Cold in Oslo."])),
    )
    first = client.responses.create(
        model="gpt-4o-mini", instructions="Be brief.", input="Weather in Oslo?", tools=[WEATHER], store=False
    )
    (call,) = first.output
    assert (call.type, call.call_id, call.name, json.loads(call.arguments)) == (
        "function_call",
        "call_7",
        "get_weather",
        {"city": "Oslo"},
    )
    assert first.status == "completed" and first.store is False
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "-3 C"}
    second = client.responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            *[i.model_dump() for i in first.output],
            output,
        ],
        tools=[WEATHER],
    )
    assert second.output_text == "Cold in Oslo."
    assert second.usage.input_tokens == 5 and second.usage.output_tokens == 7
    sent = e2e.fakes.openai.requests[-1].json()["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_7"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_7", "content": "-3 C"}
    assert e2e.fakes.openai.requests[0].json()["messages"][0] == {"role": "system", "content": "Be brief."}


def test_responses_stream_with_reasoning_and_a_tool_round_trip_on_anthropic(e2e: E2E, client: openai.OpenAI):
    e2e.fakes.anthropic.script(
        anthropic_fake.stream(
            anthropic_fake.answer(
                [
                    anthropic_fake.thinking_block(0, ["Oslo is ", "cold."], "sig-xyz"),
                    anthropic_fake.tool_use_block(1, "toolu_3", "get_weather", ['{"city"', ': "Oslo"}']),
                ],
                stop_reason="tool_use",
                usage=anthropic_fake.usage_object(30, 12),
            )
        ),
        anthropic_fake.stream(anthropic_fake.message_events(["Very cold."])),
    )
    options = {"model": "claude-haiku-4-5", "tools": [WEATHER], "reasoning": {"effort": "low"}}
    question = {"role": "user", "content": "Weather in Oslo?"}
    with client.responses.stream(input=[question], max_output_tokens=4000, **options) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds
    assert "response.function_call_arguments.delta" in kinds
    reasoning, call = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Oslo is cold."
    assert reasoning.encrypted_content == "sig-xyz"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
    assert final.usage.input_tokens == 30 and final.usage.output_tokens == 12
    items = [question, *[i.model_dump(exclude_none=True) for i in final.output]]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "-20 C"})
    with client.responses.stream(input=items, max_output_tokens=4000, **options) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text == "Very cold."
    sent = e2e.fakes.anthropic.requests[-1].json()["messages"]
    assert sent[1]["content"][0] == {"type": "thinking", "thinking": "Oslo is cold.", "signature": "sig-xyz"}
    assert sent[2]["content"][0]["tool_use_id"] == "toolu_3"


def test_structured_output_is_the_response_format(e2e: E2E, client: openai.OpenAI):
    e2e.fakes.openai.script(openai_fake.stream(openai_fake.chat_events(['{"n": 3}'])))
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    reply = client.responses.create(
        model="gpt-4o-mini",
        input="Three?",
        text={"format": {"type": "json_schema", "name": "count", "schema": schema, "strict": True}},
    )
    assert json.loads(reply.output_text) == {"n": 3}
    sent = e2e.fakes.openai.requests[-1].json()["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"]["required"] == ["n"]


def test_previous_response_id_and_bad_input_are_refused_in_openais_shape(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o-mini", input="hi", previous_response_id="resp_1")
    assert caught.value.code == "INVALID_REQUEST" and caught.value.param == "previous_response_id"
    assert "send the whole conversation" in caught.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="gpt-4o-mini", input=[], tools=[{"type": "web_search"}])
    assert bad.value.code == "INVALID_REQUEST"
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input="hi")
    assert missing.value.code == "MODEL_NOT_FOUND"


def test_a_vendor_failure_mid_stream_is_raised_by_the_sdk(e2e: E2E, client: openai.OpenAI):
    e2e.fakes.openai.script(
        openai_fake.stream([*openai_fake.chat_events(["partial"])[:2], b"data: {not json}\n\n"])
    )
    with (
        pytest.raises(openai.APIError) as failed,
        client.responses.stream(model="gpt-4o-mini", input="hi") as s,
    ):
        for _ in s:
            pass
    assert str(failed.value.code).startswith("UPSTREAM_")


# --- the openai-agents SDK on the local model ------------------------------------------------


@pytest.fixture(scope="module")
def local_stack() -> Iterator[Stack]:
    """Server (with the built-in local model) and Envoy, nothing else."""
    with running_stack(isolated_env(AIGC_LOCAL_ENABLED="true")) as stack:
        yield stack


def test_an_openai_agents_agent_with_one_function_tool_on_the_local_model(local_stack: Stack):
    agents = pytest.importorskip("agents")
    called: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return f"It is sunny in {city}."

    client = openai.AsyncOpenAI(base_url=f"{local_stack.http}/openai/v1", api_key="unused", max_retries=0)
    model = agents.OpenAIResponsesModel(model="smollm2", openai_client=client)
    agent = agents.Agent(
        name="weather",
        instructions="Use get_weather to answer.",
        tools=[get_weather],
        model=model,
        model_settings=agents.ModelSettings(tool_choice="required", temperature=0, max_tokens=48),
    )
    agents.set_tracing_disabled(True)
    result = agents.Runner.run_sync(agent, "What is the weather in Paris?", max_turns=4)
    assert called, "the agent ran the tool the local model called"
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"]
    assert isinstance(result.final_output, str)


def test_the_local_model_answers_through_the_anthropic_door(local_stack: Stack):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=f"{local_stack.http}/anthropic", api_key="unused", max_retries=0)
    with client.messages.stream(
        model="smollm2", max_tokens=8, messages=[{"role": "user", "content": "Say hello."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens >= 1
