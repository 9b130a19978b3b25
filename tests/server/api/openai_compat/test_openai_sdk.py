"""The official `openai` Python SDK against the OpenAI-compatible door of the real server
(its own port, AIGC_OPENAI_ADDRESS), with the real local model: unary, streaming with
usage, a tool call, JSON schema output, completions, models, and errors - the SDK's own
exception types, carrying our status, reason and message. Through Envoy at :8000 it is
the same door (tests/e2e/test_openai_door_e2e.py).
"""

from __future__ import annotations

import json
import time

import jsonschema
import openai
import pytest

from tests.support.processes import ServerProcess, running_server

MODEL = "smollm2"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    # Any key works while authentication is off (the SDK insists on one).
    return openai.OpenAI(
        base_url=f"http://{server.openai_address}/openai/v1", api_key="unused", max_retries=0
    )


def ask(text: str = "Say hello.") -> list[dict]:
    return [{"role": "user", "content": text}]


def test_unary_chat(client: openai.OpenAI):
    reply = client.chat.completions.create(model=MODEL, messages=ask(), max_tokens=12, temperature=0)
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens >= 1
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_with_usage_folds_to_the_unary_answer(client: openai.OpenAI):
    options = {
        "model": MODEL,
        "messages": ask("Name three colours."),
        "max_tokens": 24,
        "temperature": 0,
        "seed": 7,
    }
    unary = client.chat.completions.create(**options)
    chunks = list(
        client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == unary.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3, "it streamed"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [unary.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == unary.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_a_required_tool_call_then_its_result(client: openai.OpenAI):
    messages = ask("What is the weather in Paris?")
    reply = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=64, temperature=0
    )
    (call,) = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments), dict)
    messages += [
        reply.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], max_tokens=24, temperature=0
    )
    assert answer.choices[0].message.content


def test_a_streamed_tool_call_arrives_in_argument_deltas(client: openai.OpenAI):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ask("Weather in Rome?"),
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=64,
            temperature=0,
            stream=True,
        )
    )
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather" and deltas[0].index == 0
    assert all(d.index == 0 for d in deltas)
    assert isinstance(json.loads("".join(d.function.arguments or "" for d in deltas)), dict)


def test_json_schema_output(client: openai.OpenAI):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ask("Invent a person."),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        max_tokens=64,
        # Greedy: sampled, the grammar holds but a name of 40 newlines once ran
        # into max_tokens, and cut JSON does not parse.
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_completions_and_models(client: openai.OpenAI):
    reply = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0)
    assert reply.object == "text_completion" and reply.choices[0].text
    streamed = list(
        client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices)
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids
    assert client.models.retrieve(MODEL).owned_by == "local"


def test_errors_are_the_sdks_exceptions_with_our_status(client: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=ask())
    error = missing.value
    assert error.status_code == 404 and error.code == "MODEL_NOT_FOUND"
    assert "no-such-model" in error.message
    assert (
        error.request_id and error.body["status"]["details"][0]["metadata"]["request_id"] == error.request_id
    )
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=ask(), temperature=9)
    assert bad.value.code == "INVALID_REQUEST" and bad.value.param == "generation_config.temperature"
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.chat.completions.create(model=MODEL, messages=ask(), n=2)
    assert unsupported.value.param == "n"
    with pytest.raises(openai.BadRequestError) as capability:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
            ],
        )
    assert capability.value.code == "CAPABILITY_NOT_SUPPORTED"


def test_an_error_mid_stream_is_raised_by_the_sdk_not_a_clean_end(
    client: openai.OpenAI, server: ServerProcess
):
    """A deadline passing mid-stream (x-aigc-timeout): the SDK raises from the `error` event.

    Greedy decoding, so the story runs to the 1000-token limit (~15 s here), far past the
    5 s deadline; sampled, it once ended on its own first and the stream closed clean. The
    first token comes in 0.1 s, or a few seconds on a machine busy with other tests: 5 s
    leaves room for both (a deadline before it would be an HTTP 504, not a stream)."""
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ask("Write a long story about the sea."),
        max_tokens=1000,
        temperature=0,
        stream=True,
        extra_headers={"x-aigc-timeout": "5"},
    )
    seen = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    assert seen, "the stream had started"
    assert caught.value.code == "UPSTREAM_TIMEOUT"


def test_leaving_a_stream_stops_the_model(client: openai.OpenAI, server: ServerProcess):
    stream = client.chat.completions.create(
        model=MODEL, messages=ask("Count from 1 to 500."), max_tokens=1000, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [
            json.loads(line)
            for line in server.output().splitlines()
            if '"surface":"openai"' in line and '"method":"StreamChat"' in line
        ]
        if any(line["code"] == "CANCELLED" for line in lines):
            return
        time.sleep(0.1)
    raise AssertionError("no CANCELLED access line for the stream the client left")


# --- with keys ----------------------------------------------------------------------------


def test_keys_on_the_door_are_the_same_keys(tmp_path):
    from server.access.keys import digest_of, new_key

    key, narrow = new_key(), new_key()
    config = tmp_path / "aigc.toml"
    config.write_text(
        f'[[keys]]\nname = "team"\nsha256 = "{digest_of(key).hex()}"\n\n'
        f'[[keys]]\nname = "narrow"\nsha256 = "{digest_of(narrow).hex()}"\nmodels = ["gpt-4o-mini"]\n'
    )
    with running_server({"AIGC_CONFIG": str(config), "AIGC_PRESETS": "openai"}) as keyed:
        base = f"http://{keyed.openai_address}/openai/v1"
        good = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=ask(), max_tokens=2).usage.total_tokens
        with pytest.raises(openai.AuthenticationError) as wrong:
            openai.OpenAI(base_url=base, api_key="aigc-wrong", max_retries=0).models.list()
        assert wrong.value.code == "API_KEY_INVALID"
        with pytest.raises(openai.PermissionDeniedError) as denied:
            openai.OpenAI(base_url=base, api_key=narrow, max_retries=0).chat.completions.create(
                model=MODEL, messages=ask()
            )
        assert denied.value.code == "MODEL_NOT_ALLOWED"
        output = keyed.output()
    assert key not in output and narrow not in output
