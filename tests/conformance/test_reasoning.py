"""Reasoning: its own parts (never in the answer text), controls translated, signatures kept."""

from __future__ import annotations

import pytest

from server.errors import InvalidRequest
from tests.conformance.requests import WEATHER, chat, user
from tests.conformance.vendor import CallSpec, UsageSpec, expected_sent

USAGE = UsageSpec(prompt=20, completion=50, reasoning=38)


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_reasoning_is_its_own_part(harness, vendor, fake, streaming):
    fake.script(
        vendor.reasoning_reply(
            ["First, 2+2", " is 4."], ["The answer", " is 4."], signature="sig-1", usage=USAGE
        )
    )
    request = chat(user("2+2?"), reasoning={"include_reasoning": True, "effort": "EFFORT_LOW"})
    result = await (harness.stream(request) if streaming else harness.unary(request))
    assert result.kinds() == ["reasoning", "text"]
    assert result.parts[0].reasoning.text == "First, 2+2 is 4."
    assert result.texts() == ["The answer is 4."]
    if vendor.signs_reasoning:
        assert result.parts[0].signature == "sig-1"
    assert result.usage == USAGE.proto()
    if streaming:
        kinds = {(p.index, p.WhichOneof("data")) for d in result.deltas for p in d}
        assert kinds == {(0, "reasoning"), (1, "text")}


async def test_reasoning_not_returned_unless_asked(harness, vendor, fake):
    fake.script(vendor.reasoning_reply(["thinking..."], ["4"], signature="sig-1", usage=USAGE))
    result = await harness.unary(chat(user("2+2?"), reasoning={"effort": "EFFORT_LOW"}))
    assert result.texts() == ["4"]
    expected = ["reasoning", "text"] if vendor.returns_signed_reasoning_unasked else ["text"]
    assert result.kinds() == expected
    assert result.usage.reasoning_tokens == 38, "reasoning tokens are counted either way"


async def test_reasoning_effort_is_translated(harness, vendor, fake):
    fake.script(vendor.text_reply(["ok"]))
    await harness.unary(
        chat(user("hi"), reasoning={"effort": "EFFORT_HIGH"}, generation_config={"max_output_tokens": 30000})
    )
    assert vendor.reasoning_sent(fake.requests[0]) == vendor.reasoning_for_high_effort


async def test_reasoning_budget_is_translated_or_refused(harness, vendor, fake):
    fake.script(vendor.text_reply(["ok"]))
    request = chat(
        user("hi"), reasoning={"budget_tokens": 2048}, generation_config={"max_output_tokens": 4096}
    )
    if vendor.reasoning_for_budget_2048 is None:
        with pytest.raises(InvalidRequest) as caught:
            await harness.unary(request)
        assert "reasoning.budget_tokens" in caught.value.violations
        assert not fake.requests
        return
    await harness.unary(request)
    assert vendor.reasoning_sent(fake.requests[0]) == vendor.reasoning_for_budget_2048


async def test_signed_reasoning_goes_back_with_tool_results(harness, vendor, fake):
    """A thinking model's tool turn, continued: its reasoning part (and signature) is sent back."""
    fake.script(vendor.text_reply(["18°C."]))
    request = chat(
        user("Weather in Paris?"),
        {
            "role": "ROLE_ASSISTANT",
            "parts": [
                {"reasoning": {"text": "I should call the tool."}, "signature": "sig-abc"},
                {"tool_call": {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}},
            ],
        },
        {"role": "ROLE_TOOL", "parts": [{"tool_result": {"tool_call_id": "call_1", "content": "18C"}}]},
        tools=[WEATHER],
        reasoning={"include_reasoning": True},
    )
    await harness.unary(request)
    assert vendor.decode(fake.requests[0]) == expected_sent(request, vendor, "model-1")


async def test_reasoning_then_tool_call_in_one_turn(harness, vendor, fake):
    fake.script(
        vendor.reasoning_then_tool_call_reply(
            ["Need weather."], CallSpec("call_1", "get_weather", '{"city": "Paris"}', 3), signature="sig-2"
        )
    )
    result = await harness.stream(
        chat(user("Weather in Paris?"), tools=[WEATHER], reasoning={"include_reasoning": True})
    )
    assert result.kinds() == ["reasoning", "tool_call"]
    if vendor.signs_reasoning:
        signed = [p for p in result.parts if p.signature]
        assert [p.signature for p in signed] == ["sig-2"]
