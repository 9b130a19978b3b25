"""Reasoning and signatures as OpenRouter's `reasoning_details` (server/api/openai_compat/reasoning.py):
out in answers and stream chunks, and back in on the assistant message, part for part."""

from __future__ import annotations

import pytest

from aigc.v1 import content_pb2
from server.api.openai_compat import wire
from server.errors import InvalidRequest

P = content_pb2.Part


def thinking(text: str, signature: str = "") -> content_pb2.Part:
    return P(reasoning=content_pb2.Reasoning(text=text), signature=signature)


def call(call_id: str, signature: str = "") -> content_pb2.Part:
    return P(tool_call=content_pb2.ToolCall(id=call_id, name="f", arguments="{}"), signature=signature)


CLAUDE = [
    thinking("Let me think.", "sig-claude"),
    P(reasoning=content_pb2.Reasoning(encrypted_content="ENC")),
    call("toolu_1"),
]
GEMINI = [P(text="Checking.", signature="sig-text"), call("c1", "sig-call-1"), call("c2")]


def answer_message(parts: list[content_pb2.Part]) -> dict:
    return wire.chat_completion("r", "m", parts, 0, None, 1)["choices"][0]["message"]


def sent_back(message: dict) -> list[content_pb2.Part]:
    request, _, _ = wire.chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi"},
                message,
                *(
                    {"role": "tool", "tool_call_id": c["id"], "content": "ok"}
                    for c in message.get("tool_calls") or ()
                ),
            ],
        }
    )
    return list(request.messages[1].parts)


def test_claude_thinking_signed_and_redacted_round_trips_in_order():
    message = answer_message(CLAUDE)
    assert message["reasoning_details"] == [
        {"type": "reasoning.text", "text": "Let me think.", "signature": "sig-claude", "index": 0},
        {"type": "reasoning.encrypted", "data": "ENC", "index": 1},
    ]
    assert sent_back(message) == CLAUDE


def test_gemini_signatures_ride_on_the_tool_call_ids():
    message = answer_message(GEMINI)
    assert message["reasoning_details"] == [
        {"type": "reasoning.text", "text": "", "signature": "sig-text", "index": 0},
        {"type": "reasoning.encrypted", "id": "c1", "data": "sig-call-1", "index": 1},
    ]
    back = sent_back(message)
    # The text part's signature comes back on a signature-only reasoning part (a thought, at Gemini).
    assert back == [thinking("", "sig-text"), P(text="Checking."), call("c1", "sig-call-1"), call("c2")]


def test_reasoning_content_alone_is_still_read():
    message = {"role": "assistant", "content": "x", "reasoning_content": "plain"}
    assert sent_back(message)[0] == thinking("plain")


def test_summaries_and_index_order_are_read():
    message = {
        "role": "assistant",
        "content": "x",
        "reasoning_content": "ignored: the details have it",
        "reasoning_details": [
            {"type": "reasoning.text", "text": "second", "index": 1},
            {"type": "reasoning.summary", "summary": "first", "index": 0},
        ],
    }
    assert sent_back(message)[:2] == [thinking("first"), thinking("second")]


@pytest.mark.parametrize(
    "details, field",
    [
        ("text", "messages[1].reasoning_details"),
        ([{"type": "reasoning.other"}], "messages[1].reasoning_details[0]"),
        ([{"type": "reasoning.text", "text": 5}], "messages[1].reasoning_details[0].text"),
        ([{"type": "reasoning.encrypted"}], "messages[1].reasoning_details[0].data"),
        ([{"type": "reasoning.encrypted", "id": "nope", "data": "s"}], "messages[1].reasoning_details[0].id"),
        ([{"type": "reasoning.text", "text": "t", "index": "0"}], "messages[1].reasoning_details[0].index"),
    ],
)
def test_details_of_the_wrong_shape_are_refused_by_field(details, field):
    with pytest.raises(InvalidRequest) as caught:
        sent_back({"role": "assistant", "content": "x", "reasoning_details": details})
    assert field in caught.value.violations


def test_stream_chunks_carry_each_item_under_one_index():
    writer = wire.ChunkWriter("r", "m", 1)
    deltas = [
        thinking("Let "),
        thinking("me think."),
        thinking("", "sig-claude"),
        call("toolu_1"),
        call("c1", "sig-call-1"),
    ]
    for i, part in enumerate(deltas):
        part.index = 0 if i < 3 else i - 2
    chunks = writer.deltas(deltas)
    items = [c["choices"][0]["delta"].get("reasoning_details") for c in chunks[1:]]
    assert items == [
        [{"type": "reasoning.text", "text": "Let ", "index": 0}],
        [{"type": "reasoning.text", "text": "me think.", "index": 0}],
        [{"type": "reasoning.text", "text": "", "signature": "sig-claude", "index": 0}],
        None,
        [{"type": "reasoning.encrypted", "id": "c1", "data": "sig-call-1", "index": 1}],
    ]
