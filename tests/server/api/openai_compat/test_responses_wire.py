"""The Responses door's translation, without a server: items in, events out."""

from __future__ import annotations

import json

import pytest

from aigc.v1 import content_pb2, generation_pb2
from server.api.openai_compat import responses_wire
from server.errors import InvalidRequest


def events(raw: list[bytes]) -> list[dict]:
    out = []
    for chunk in raw:
        name, data = chunk.decode().strip().split("\n")
        body = json.loads(data.removeprefix("data: "))
        assert name == f"event: {body['type']}"
        out.append(body)
    return out


def test_a_stream_is_one_item_at_a_time_with_increasing_sequence_numbers():
    def call(index: int, args: str, signature: str = "") -> content_pb2.Part:
        tool = content_pb2.ToolCall(id=f"c{index}", name="f", arguments=args)
        return content_pb2.Part(index=index, tool_call=tool, signature=signature)

    writer = responses_wire.EventWriter("x", "m")
    reasoning = content_pb2.Part(index=0, reasoning=content_pb2.Reasoning(text="hm"), signature="S")
    raw = writer.deltas([reasoning])
    raw += writer.deltas([call(1, '{"a"', "G"), call(2, "{}"), call(1, ":1}")])
    usage = generation_pb2.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
    raw += writer.finish(generation_pb2.FINISH_REASON_TOOL_CALLS, usage)
    seen = events(raw)
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    assert seen[0]["type"] == "response.created" and seen[-1]["type"] == "response.completed"
    done = [e["item"] for e in seen if e["type"] == "response.output_item.done"]
    assert [(d["type"], d.get("call_id"), d.get("arguments")) for d in done] == [
        ("reasoning", None, None),
        ("function_call", "c1.sig.G", '{"a":1}'),
        ("function_call", "c2", "{}"),
    ]
    assert done[0]["encrypted_content"] == "S" and done[0]["summary"][0]["text"] == "hm"
    added = [e["output_index"] for e in seen if e["type"] == "response.output_item.added"]
    assert added == [0, 1, 2]
    final = seen[-1]["response"]
    assert final["output"] == done and final["usage"]["total_tokens"] == 7 and final["id"] == "resp_x"


def test_items_become_the_conversation_and_signatures_come_back_out_of_ids():
    chat, stream = responses_wire.responses_request(
        {
            "model": "m",
            "instructions": "Be brief.",
            "stream": True,
            "input": [
                {"role": "user", "content": "q"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "t"}],
                    "encrypted_content": "S",
                },
                {"type": "reasoning", "id": "rs_2", "summary": []},
                {"type": "function_call", "call_id": "c1.sig.G", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1.sig.G", "output": "ok"},
            ],
        }
    )
    assert stream
    system, asked, answered, results = chat.messages
    assert system.content == "Be brief." and asked.parts[0].text == "q"
    assert [(p.WhichOneof("data"), p.signature) for p in answered.parts] == [
        ("reasoning", "S"),
        ("tool_call", "G"),
    ]
    assert answered.parts[1].tool_call.id == "c1" and results.parts[0].tool_result.tool_call_id == "c1"
    with pytest.raises(InvalidRequest) as caught:
        responses_wire.responses_request(
            {"model": "m", "input": "q", "previous_response_id": "resp_1", "x": 1}
        )
    assert set(caught.value.violations) == {"previous_response_id", "x"}
