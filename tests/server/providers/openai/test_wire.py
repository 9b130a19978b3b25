"""OpenAI wire translations on their own: dicts in, dicts out (no network).

The conformance suite proves the behaviour shared with every vendor; these
are the OpenAI-specific rules: field names, the legacy completions body,
the reasoning and usage variants of compatible servers, error bodies."""

from __future__ import annotations

import json

from aigc.v1 import generation_pb2
from server.errors import UpstreamFailure
from server.providers.base import ProviderRequest
from server.providers.openai import wire
from tests.conformance.requests import WEATHER, chat, user

F = generation_pb2


def request(chat_request=None, **fields) -> ProviderRequest:
    chat_request = chat_request or chat(user("hi"))
    return ProviderRequest(
        upstream_model="gpt-x", chat=chat_request, config=chat_request.generation_config, **fields
    )


def test_sampling_fields_and_the_token_limit_name():
    r = request(
        chat(
            user("hi"),
            generation_config={
                "max_output_tokens": 50,
                "temperature": 0.5,
                "top_p": 0.9,
                "seed": 7,
                "stop_sequences": ["END"],
                "presence_penalty": 0.1,
                "frequency_penalty": -0.1,
            },
        ),
        user_id="u-1",
    )
    body = wire.chat_body(r)
    assert body == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.1,
        "stop": ["END"],
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert wire.chat_body(r, max_tokens_param="max_completion_tokens")["max_completion_tokens"] == 50


def test_raw_completion_body_uses_the_legacy_field_names():
    r = ProviderRequest(
        upstream_model="m", prompt="Once", config=generation_pb2.GenerationConfig(max_output_tokens=5)
    )
    body = wire.completion_body(r, max_tokens_param="max_completion_tokens")
    assert body == {
        "model": "m",
        "prompt": "Once",
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_vendor_params_merge_deeply_but_after_the_typed_fields():
    r = request(vendor_params={"logit_bias": {"42": -100}, "stream_options": {"extra": 1}})
    body = wire.chat_body(r)
    assert body["logit_bias"] == {"42": -100}
    assert body["stream_options"] == {"include_usage": True, "extra": 1}


def test_tool_without_parameters_gets_an_empty_object_schema():
    body = wire.chat_body(request(chat(user("hi"), tools=[{"function": {"name": "ping"}}])))
    assert body["tools"] == [
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
    ]


def test_strict_json_schema_and_reasoning_effort():
    schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1}}}
    body = wire.chat_body(
        request(
            chat(
                user("hi"),
                response_format={"type": "TYPE_JSON_SCHEMA", "schema": schema, "strict": True},
                reasoning={"effort": "EFFORT_MEDIUM"},
            )
        )
    )
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": True},
    }
    assert isinstance(body["response_format"]["json_schema"]["schema"]["properties"]["a"]["minimum"], int)
    assert body["reasoning_effort"] == "medium"


def test_role_chunk_is_nothing_and_content_starts_part_zero():
    t = wire.StreamTranslator()
    assert (
        t.feed({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}) is None
    )
    chunk = t.feed({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}}]})
    assert [(p.index, p.text) for p in chunk.parts] == [(0, "Hi")]
    assert chunk.response_id == "c"


def test_reasoning_content_and_reasoning_are_both_read_but_only_returned_when_asked():
    asked = wire.StreamTranslator(include_reasoning=True)
    a = asked.feed({"choices": [{"delta": {"reasoning_content": "think"}}]})
    b = asked.feed({"choices": [{"delta": {"reasoning": "more"}}]})
    c = asked.feed({"choices": [{"delta": {"content": "answer"}}]})
    assert [(p.index, p.WhichOneof("data")) for x in (a, b, c) for p in x.parts] == [
        (0, "reasoning"),
        (0, "reasoning"),
        (1, "text"),
    ]
    silent = wire.StreamTranslator()
    assert silent.feed({"choices": [{"delta": {"reasoning_content": "think"}}]}) is None
    assert silent.feed({"choices": [{"delta": {"content": "answer"}}]}).parts[0].index == 0


def test_tool_call_without_an_id_gets_one_and_keeps_it():
    t = wire.StreamTranslator()
    first = t.feed(
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{"}}]}}]}
    )
    second = t.feed({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}}]})
    ids = {first.parts[0].tool_call.id, second.parts[0].tool_call.id}
    assert len(ids) == 1 and ids.pop().startswith("call_")
    assert second.parts[0].tool_call.name == "f"


def test_arguments_sent_as_an_object_become_json_text():
    t = wire.StreamTranslator()
    chunk = t.feed(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "x", "function": {"name": "f", "arguments": {"a": 1}}}
                        ]
                    }
                }
            ]
        }
    )
    assert json.loads(chunk.parts[0].tool_call.arguments) == {"a": 1}


def test_finish_reasons():
    for reason, expected in [
        ("stop", F.FINISH_REASON_STOP),
        ("length", F.FINISH_REASON_MAX_TOKENS),
        ("tool_calls", F.FINISH_REASON_TOOL_CALLS),
        ("function_call", F.FINISH_REASON_TOOL_CALLS),
        ("content_filter", F.FINISH_REASON_CONTENT_FILTER),
        ("eos", F.FINISH_REASON_OTHER),
    ]:
        t = wire.StreamTranslator()
        assert t.feed({"choices": [{"delta": {}, "finish_reason": reason}]}).finish == expected
        assert t.finished


def test_legacy_completion_chunks():
    t = wire.StreamTranslator()
    assert (
        t.feed({"choices": [{"text": " world", "index": 0, "finish_reason": None}]}).parts[0].text == " world"
    )


def test_usage_variants():
    usage = wire.usage_of(
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_cache_hit_tokens": 8,
            "completion_tokens_details": {"reasoning_tokens": 3},
        }
    )
    assert (usage.total_tokens, usage.cached_prompt_tokens, usage.reasoning_tokens) == (15, 8, 3)
    plain = wire.usage_of({"prompt_tokens": 1, "completion_tokens": 1})
    assert not plain.HasField("reasoning_tokens") and not plain.HasField("cached_prompt_tokens")
    assert wire.usage_of(None) is None


def test_a_200_with_an_error_body_is_classified_not_malformed():
    error = wire.error_from_response(
        "qianfan",
        200,
        {"content-type": "application/json"},
        b'{"error": {"code": "rate_limit_exceeded", "message": "qps limit"}}',
        (),
    )
    assert error.failure is UpstreamFailure.RATE_LIMITED
    html = wire.error_from_response("x", 200, {"content-type": "text/html"}, b"<html>", ())
    assert html.failure is UpstreamFailure.MALFORMED_RESPONSE


def test_error_body_that_is_not_json_is_quoted_and_redacted():
    error = wire.error_from_response("x", 502, {}, b"bad gateway sk-secret-1234", ("sk-secret-1234",))
    assert error.failure is UpstreamFailure.SERVER_ERROR
    assert "bad gateway" in error.message and "sk-secret-1234" not in error.message


def test_images_become_image_url_parts():
    r = request(
        chat({"role": "ROLE_USER", "parts": [{"text": "see"}, {"image": {"uri": "https://x/y.png"}}]})
    )
    assert wire.chat_body(r)["messages"][0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
    ]


def test_history_reasoning_is_not_sent_and_empty_arguments_become_an_object():
    r = request(
        chat(
            user("w?"),
            {
                "role": "ROLE_ASSISTANT",
                "parts": [{"reasoning": {"text": "hmm"}}, {"tool_call": {"id": "a", "name": "get_weather"}}],
            },
            {
                "role": "ROLE_TOOL",
                "parts": [{"tool_result": {"tool_call_id": "a", "content": "ok", "is_error": True}}],
            },
            tools=[WEATHER],
        )
    )
    messages = wire.chat_body(r)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "a", "content": "ok"}
