"""The Anthropic door's translation, without a server: requests in, SSE events out."""

from __future__ import annotations

import json

import pytest

from aigc.v1 import content_pb2, generation_pb2
from server.api.anthropic_door import wire
from server.errors import InvalidRequest


def events(raw: list[bytes]) -> list[dict]:
    out = []
    for chunk in raw:
        name, data = chunk.decode().strip().split("\n")
        body = json.loads(data.removeprefix("data: "))
        assert name == f"event: {body['type']}"
        out.append(body)
    return out


def test_interleaved_parallel_tool_calls_stream_as_whole_blocks_in_order():
    def call(index: int, args: str) -> content_pb2.Part:
        return content_pb2.Part(
            index=index, tool_call=content_pb2.ToolCall(id=f"t{index}", name="f", arguments=args)
        )

    writer = wire.EventWriter("abc", "m")
    raw = writer.deltas([content_pb2.Part(index=0, text="Hi")])
    raw += writer.deltas([call(1, '{"a"'), call(2, '{"b"'), call(1, ":1}"), call(2, ":2}")])
    raw += writer.finish(generation_pb2.FINISH_REASON_TOOL_CALLS, generation_pb2.Usage(prompt_tokens=3))
    seen = events(raw)
    assert [e["type"] for e in seen] == [
        "message_start",
        *["content_block_start", "content_block_delta", "content_block_stop"],
        *["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"] * 2,
        "message_delta",
        "message_stop",
    ]
    starts = [e for e in seen if e["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"].get("id")) for s in starts] == [(0, None), (1, "t1"), (2, "t2")]
    args = {}
    for e in seen:
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta":
            args[e["index"]] = args.get(e["index"], "") + e["delta"]["partial_json"]
    assert args == {1: '{"a":1}', 2: '{"b":2}'}
    assert seen[-2]["delta"]["stop_reason"] == "tool_use"
    assert seen[0]["message"]["id"] == "msg_abc"


def test_tool_results_come_before_the_users_text_and_unknown_fields_are_named():
    chat, stream = wire.messages_request(
        {
            "model": "m",
            "max_tokens": 5,
            "stream": True,
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t.sig.S", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "and?", "cache_control": {"type": "ephemeral"}},
                        {"type": "tool_result", "tool_use_id": "t.sig.S", "content": "ok", "is_error": True},
                    ],
                },
            ],
        }
    )
    assert stream
    roles = [m.role for m in chat.messages]
    assert roles == [
        content_pb2.ROLE_USER,
        content_pb2.ROLE_ASSISTANT,
        content_pb2.ROLE_TOOL,
        content_pb2.ROLE_USER,
    ]
    assert (chat.messages[1].parts[0].tool_call.id, chat.messages[1].parts[0].signature) == ("t", "S")
    assert chat.messages[2].parts[0].tool_result.tool_call_id == "t"
    assert chat.messages[2].parts[0].tool_result.is_error
    with pytest.raises(InvalidRequest) as caught:
        wire.messages_request({"model": "m", "messages": [], "top_k": 1, "bogus": 2})
    assert set(caught.value.violations) == {"max_tokens", "messages", "top_k", "bogus"}
