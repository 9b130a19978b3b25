"""Tool calling: declarations and choices go out, calls come back whole and in order."""

from __future__ import annotations

import json

import pytest

from aigc.v1 import generation_pb2
from tests.conformance.requests import TIME, WEATHER, chat, user
from tests.conformance.vendor import CallSpec, UsageSpec, expected_sent

USAGE = UsageSpec(prompt=40, completion=12)
# Arguments with a multi-byte character and an escape, so fragment boundaries fall inside both.
PARIS = json.dumps({"city": "Paris — 巴黎", "unit": "c", "note": 'say "hi"'}, ensure_ascii=False)
TOKYO = json.dumps({"city": "東京"}, ensure_ascii=False)


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ({}, None),
        ({"mode": "MODE_AUTO"}, "auto"),
        ({"mode": "MODE_NONE"}, "none"),
        ({"mode": "MODE_REQUIRED"}, "required"),
        ({"function_name": "get_time"}, "function:get_time"),
    ],
    ids=["default", "auto", "none", "required", "named"],
)
async def test_tools_and_tool_choice_are_translated(harness, vendor, fake, choice, sent):
    fake.script(vendor.text_reply(["ok"], usage=USAGE))
    fields = {"tools": [WEATHER, TIME]}
    if choice:
        fields["tool_choice"] = choice
    request = chat(user("weather?"), **fields)
    await harness.unary(request)
    decoded = vendor.decode(fake.requests[0])
    assert decoded == expected_sent(request, vendor, "model-1")
    assert decoded.tool_choice == sent


async def test_tool_call_arguments_streamed_in_pieces(harness, vendor, fake):
    call = CallSpec("call_1", "get_weather", PARIS, pieces=9)
    streamed_reply = vendor.tool_calls_reply([call], usage=USAGE)
    # Separate network writes, so fragments are separate reads (what arrives
    # together is passed on together: SseStream.batches).
    streamed_reply.pause = 0.01
    fake.script(streamed_reply, vendor.tool_calls_reply([call], usage=USAGE))
    request = chat(user("weather in Paris?"), tools=[WEATHER])
    streamed = await harness.stream(request)
    unary = await harness.unary(request)
    for result in (streamed, unary):
        assert result.kinds() == ["tool_call"]
        (got,) = result.calls()
        assert (got.name, json.loads(got.arguments)) == ("get_weather", json.loads(PARIS))
        assert got.id
        assert result.finish == generation_pb2.FINISH_REASON_TOOL_CALLS
        assert result.usage == USAGE.proto()
    assert streamed.calls()[0].arguments == unary.calls()[0].arguments
    deltas = [p for d in streamed.deltas for p in d]
    if not getattr(vendor, "arguments_are_objects", False):
        # Gemini's API sends each call whole (argument streaming is Vertex AI only).
        assert len(deltas) > 1, "arguments arrive as they are generated, not at the end"
    assert {(p.index, p.tool_call.id, p.tool_call.name) for p in deltas} == {(0, got.id, "get_weather")}


async def test_parallel_tool_calls_interleaved(harness, vendor, fake):
    calls = [
        CallSpec("call_a", "get_weather", PARIS, pieces=4),
        CallSpec("call_b", "get_time", TOKYO, pieces=3),
    ]
    fake.script(vendor.tool_calls_reply(calls, interleave=True, usage=USAGE))
    result = await harness.stream(chat(user("Paris weather and Tokyo time?"), tools=[WEATHER, TIME]))
    got = result.calls()
    assert [c.name for c in got] == ["get_weather", "get_time"]
    assert [json.loads(c.arguments) for c in got] == [json.loads(PARIS), json.loads(TOKYO)]
    assert len({c.id for c in got}) == 2
    assert result.finish == generation_pb2.FINISH_REASON_TOOL_CALLS


async def test_text_then_tool_call(harness, vendor, fake):
    call = CallSpec("call_1", "get_weather", PARIS, pieces=2)
    fake.script(vendor.tool_calls_reply([call], text="Let me check.", usage=USAGE))
    result = await harness.unary(chat(user("weather?"), tools=[WEATHER]))
    assert result.kinds() == ["text", "tool_call"]
    assert result.texts() == ["Let me check."]


async def test_invalid_json_arguments_are_passed_on_unchanged(harness, vendor, fake):
    broken = '{"city": "Par'
    fake.script(vendor.tool_calls_reply([CallSpec("call_1", "get_weather", broken, pieces=2)]))
    result = await harness.unary(chat(user("weather?"), tools=[WEATHER]))
    if getattr(vendor, "arguments_are_objects", False):
        pytest.skip(f"{vendor.name} sends arguments as JSON objects: they cannot be invalid")
    assert result.calls()[0].arguments == broken


async def test_multi_turn_tool_conversation_round_trips(harness, vendor, fake):
    fake.script(vendor.text_reply(["It is 18°C in Paris and 09:00 in Tokyo."], usage=USAGE))
    request = chat(
        {"role": "ROLE_SYSTEM", "content": "Use the tools."},
        user("Paris weather and Tokyo time?"),
        {
            "role": "ROLE_ASSISTANT",
            "parts": [
                {"text": "Checking both."},
                {"tool_call": {"id": "call_a", "name": "get_weather", "arguments": PARIS}},
                {"tool_call": {"id": "call_b", "name": "get_time", "arguments": TOKYO}},
            ],
        },
        {
            "role": "ROLE_TOOL",
            "parts": [{"tool_result": {"tool_call_id": "call_a", "content": '{"temp_c": 18}'}}],
        },
        {
            "role": "ROLE_TOOL",
            "parts": [
                {"tool_result": {"tool_call_id": "call_b", "content": "clock offline", "is_error": True}}
            ],
        },
        tools=[WEATHER, TIME],
    )
    result = await harness.unary(request)
    assert result.texts() == ["It is 18°C in Paris and 09:00 in Tokyo."]
    assert vendor.decode(fake.requests[0]) == expected_sent(request, vendor, "model-1")
