"""The provider interface's helpers: merging chunks that arrived together, parts_of."""

from __future__ import annotations

from aigc.v1 import content_pb2, generation_pb2
from server.providers.base import Chunk, merge_chunks, parts_of

P = content_pb2.Part


def test_merge_joins_consecutive_deltas_of_one_part_and_keeps_the_others_apart():
    merged = merge_chunks(
        [
            Chunk(parts=[P(index=0, reasoning=content_pb2.Reasoning(text="hm"))], response_id="r"),
            Chunk(parts=[P(index=0, reasoning=content_pb2.Reasoning(text="m"), signature="s")]),
            Chunk(parts=[P(index=1, tool_call=content_pb2.ToolCall(id="a", name="f", arguments='{"x'))]),
            Chunk(parts=[P(index=2, tool_call=content_pb2.ToolCall(id="b", name="g", arguments="{"))]),
            Chunk(parts=[P(index=1, tool_call=content_pb2.ToolCall(id="a", name="f", arguments='": 1}'))]),
            Chunk(finish=generation_pb2.FINISH_REASON_TOOL_CALLS, usage=generation_pb2.Usage(total_tokens=3)),
        ]
    )
    assert [(p.index, p.WhichOneof("data")) for p in merged.parts] == [
        (0, "reasoning"),
        (1, "tool_call"),
        (2, "tool_call"),
        (1, "tool_call"),
    ]
    assert (merged.parts[0].reasoning.text, merged.parts[0].signature) == ("hmm", "s")
    assert merged.finish == generation_pb2.FINISH_REASON_TOOL_CALLS
    assert merged.usage.total_tokens == 3 and merged.response_id == "r"


def test_one_chunk_is_itself():
    chunk = Chunk(parts=[P(text="x")])
    assert merge_chunks([chunk]) is chunk


def test_parts_of_reads_the_content_shorthand():
    assert [p.text for p in parts_of(content_pb2.Message(content="hi"))] == ["hi"]
    assert parts_of(content_pb2.Message()) == ()
