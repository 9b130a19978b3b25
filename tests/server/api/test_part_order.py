"""PartOrder: interleaved part deltas in the one-block-at-a-time order of the agent APIs."""

from __future__ import annotations

from aigc.v1 import content_pb2
from server.api.part_order import PartOrder, signed_id, split_signature


def text(index: int, value: str) -> content_pb2.Part:
    return content_pb2.Part(index=index, text=value)


def call(index: int, arguments: str) -> content_pb2.Part:
    return content_pb2.Part(
        index=index, tool_call=content_pb2.ToolCall(id=f"c{index}", name="f", arguments=arguments)
    )


def steps(order: PartOrder, *batches: list[content_pb2.Part]) -> list[tuple[str, int, str]]:
    out = []
    for batch in batches:
        out += order.feed(batch)
    out += order.finish()
    return [(step, p.index, p.text or p.tool_call.arguments) for step, p in out]


def test_text_streams_live_and_ends_when_the_next_part_starts():
    assert steps(PartOrder(), [text(0, "a")], [text(0, "b"), call(1, "{")], [call(1, "}")]) == [
        ("open", 0, "a"),
        ("delta", 0, "b"),
        ("close", 0, "a"),
        ("open", 1, "{"),
        ("delta", 1, "}"),
        ("close", 1, "{"),
    ]


def test_interleaved_tool_calls_come_out_one_after_the_other_in_order():
    batches = [[call(0, "[0")], [call(1, "[1")], [call(0, "0]")], [call(2, "[2")], [call(1, "1]")]]
    assert steps(PartOrder(), *batches) == [
        ("open", 0, "[0"),
        ("delta", 0, "0]"),
        ("close", 0, "[0"),
        ("open", 1, "[1"),
        ("delta", 1, "1]"),
        ("close", 1, "[1"),
        ("open", 2, "[2"),
        ("close", 2, "[2"),
    ]


def test_a_signature_rides_in_an_id_and_comes_out_whole():
    assert split_signature(signed_id("call_1", "c2ln/+==")) == ("call_1", "c2ln/+==")
    assert split_signature("toolu_plain") == ("toolu_plain", "")
    assert signed_id("x", "") == "x"
