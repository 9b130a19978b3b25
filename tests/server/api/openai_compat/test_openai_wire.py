"""OpenAI Chat Completions JSON <-> aigc.v1, on their own (server/api/openai_compat/wire.py)."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from google.rpc import code_pb2

from aigc.v1 import content_pb2, generation_pb2, tool_pb2
from server.api.openai_compat import wire
from server.errors import InvalidRequest, ModelNotFound, UpstreamError, UpstreamFailure

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def test_a_full_chat_request_translates_field_by_field():
    request, stream, usage = wire.chat_request(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is here?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "low"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            ],
            "max_completion_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "seed": 7,
            "user": "u-1",
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
            },
            "reasoning_effort": "low",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert (stream, usage) == (True, True)
    got = as_dict(request)
    assert got["messages"] == [
        {"role": "ROLE_SYSTEM", "content": "Be brief."},
        {
            "role": "ROLE_USER",
            "parts": [{"text": "What is here?"}, {"image": {"uri": "data:image/png;base64,iVBORw0K"}}],
        },
        {
            "role": "ROLE_ASSISTANT",
            "parts": [
                {"tool_call": {"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}}
            ],
        },
        {"role": "ROLE_TOOL", "parts": [{"tool_result": {"tool_call_id": "call_1", "content": "18C"}}]},
    ]
    assert got["generation_config"] == {
        "max_output_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "seed": "7",
    }
    assert got["user_id"] == "u-1"
    assert got["tools"][0]["function"]["name"] == "get_weather"
    assert got["tool_choice"] == {"function_name": "get_weather"}
    assert got["response_format"] == {
        "type": "TYPE_JSON_SCHEMA",
        "schema": {"type": "object"},
        "name": "w",
        "strict": True,
    }
    assert got["reasoning"] == {"effort": "EFFORT_LOW", "include_reasoning": True}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"verbosity": "high"}, "verbosity"),
        ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
        ({"prompt_cache_retention": "forever"}, "prompt_cache_retention"),
        ({"max_tokens": -2147483649}, "max_tokens"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"temperature": float("nan")}, "temperature"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_field_never_dropped(body, field):
    full = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(InvalidRequest) as caught:
        wire.chat_request(full)
    assert field in caught.value.violations


def test_completions_take_one_string_prompt():
    request, stream, _ = wire.completion_request(
        {"model": "m", "prompt": ["Once"], "max_tokens": 5, "stream": False}
    )
    assert (request.prompt, request.generation_config.max_output_tokens, stream) == ("Once", 5, False)
    with pytest.raises(InvalidRequest) as caught:
        wire.completion_request({"model": "m", "prompt": [1, 2, 3], "echo": True})
    assert {"prompt", "echo"} <= set(caught.value.violations)


def test_a_whole_answer_with_text_reasoning_and_tool_calls():
    parts = [
        content_pb2.Part(reasoning=content_pb2.Reasoning(text="thinking")),
        content_pb2.Part(text="Let me check."),
        content_pb2.Part(
            tool_call=content_pb2.ToolCall(id="c1", name="get_weather", arguments='{"city":"Oslo"}')
        ),
    ]
    used = generation_pb2.Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, reasoning_tokens=3)
    out = wire.chat_completion(
        "resp-1", "gpt-4o-mini", parts, generation_pb2.FINISH_REASON_TOOL_CALLS, used, 1
    )
    assert out == {
        "id": "resp-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "reasoning_content": "thinking",
                    "reasoning_details": [{"type": "reasoning.text", "text": "thinking", "index": 0}],
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    }


def test_a_tool_call_only_answer_has_null_content():
    parts = [content_pb2.Part(tool_call=content_pb2.ToolCall(id="c1", name="f", arguments="{}"))]
    out = wire.chat_completion("r", "m", parts, generation_pb2.FINISH_REASON_TOOL_CALLS, None)
    assert out["choices"][0]["message"]["content"] is None
    assert "usage" not in out


def test_stream_chunks_number_tool_calls_from_zero_and_name_them_once():
    writer = wire.ChunkWriter("r", "m", created=1)
    first = writer.deltas([content_pb2.Part(index=0, text="Hi")])
    calls = writer.deltas(
        [
            content_pb2.Part(index=1, tool_call=content_pb2.ToolCall(id="a", name="f", arguments='{"x"')),
            content_pb2.Part(index=2, tool_call=content_pb2.ToolCall(id="b", name="g", arguments="{")),
        ]
    )
    more = writer.deltas(
        [content_pb2.Part(index=1, tool_call=content_pb2.ToolCall(id="a", name="f", arguments=":1}"))]
    )
    end = writer.finish(generation_pb2.FINISH_REASON_TOOL_CALLS, generation_pb2.Usage(total_tokens=9), True)
    deltas = [c["choices"][0]["delta"] for c in first + calls + more + end[:1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {
            "tool_calls": [
                {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x"'}}
            ]
        },
        {
            "tool_calls": [
                {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{"}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
        {},
    ]
    assert end[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert end[1]["choices"] == [] and end[1]["usage"]["total_tokens"] == 9
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "r" for c in first + calls + more + end)


def test_errors_become_openai_shapes_with_our_status_inside():
    status, body, headers = wire.error(ModelNotFound("nope").to_status("rid-1"))
    assert (status, body["error"]["type"], body["error"]["code"]) == (
        404,
        "not_found_error",
        "MODEL_NOT_FOUND",
    )
    assert body["error"]["status"]["code"] == code_pb2.NOT_FOUND
    assert headers == {"x-request-id": "rid-1", "x-should-retry": "false"}
    status, body, _ = wire.error(InvalidRequest({"messages[0].content": "must not be empty"}).to_status())
    assert (status, body["error"]["param"], body["error"]["code"]) == (
        400,
        "messages[0].content",
        "INVALID_REQUEST",
    )
    limited = UpstreamError(UpstreamFailure.RATE_LIMITED, "slow", provider="p", retry_after_seconds=2.5)
    status, body, headers = wire.error(limited.to_status())
    assert (status, body["error"]["type"], headers["retry-after"], headers["retry-after-ms"]) == (
        429,
        "rate_limit_error",
        "3",
        "2500",
    )


def test_current_sdk_parameters_map_to_typed_fields_or_are_accepted_without_effect():
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    request, _, _ = wire.chat_request({**base, "safety_identifier": "s-1", "user": "u-1"})
    assert request.user_id == "s-1"  # OpenAI's replacement for `user` wins
    request, _, _ = wire.chat_request({**base, "reasoning_effort": "none"})
    assert request.reasoning.HasField("budget_tokens") and request.reasoning.budget_tokens == 0
    for effort in ("xhigh", "max"):
        request, _, _ = wire.chat_request({**base, "reasoning_effort": effort})
        assert as_dict(request)["reasoning"]["effort"] == "EFFORT_HIGH"
    hints = {
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "prompt_cache_options": {"ttl": "1h"},
        "verbosity": "medium",
    }
    request, _, _ = wire.chat_request({**base, **hints})
    assert request == wire.chat_request(base)[0]


def test_tool_choice_modes():
    for name, mode in (
        ("auto", tool_pb2.ToolChoice.MODE_AUTO),
        ("none", tool_pb2.ToolChoice.MODE_NONE),
        ("required", tool_pb2.ToolChoice.MODE_REQUIRED),
    ):
        request, _, _ = wire.chat_request(
            {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER], "tool_choice": name}
        )
        assert request.tool_choice.mode == mode
