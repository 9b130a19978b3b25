"""The one fold: part deltas by index into the whole answer."""

from __future__ import annotations

import pytest

from aigc.v1 import content_pb2
from server.core.fold import Folder
from server.providers.base import Chunk

P = content_pb2.Part


def fold(*deltas: content_pb2.Part) -> list[content_pb2.Part]:
    folder = Folder()
    for delta in deltas:
        folder.add(Chunk(parts=[delta]))
    return folder.parts()


def test_text_reasoning_and_interleaved_tool_calls():
    call = content_pb2.ToolCall
    parts = fold(
        P(index=0, reasoning=content_pb2.Reasoning(text="hm")),
        P(index=0, reasoning=content_pb2.Reasoning(text="m"), signature="sig"),
        P(index=1, text="Let me "),
        P(index=1, text="check."),
        P(index=2, tool_call=call(id="a", name="f", arguments='{"x"')),
        P(index=3, tool_call=call(id="b", name="g", arguments="{")),
        P(index=2, tool_call=call(id="a", name="f", arguments=": 1}")),
        P(index=3, tool_call=call(id="b", name="g", arguments="}")),
    )
    assert [p.WhichOneof("data") for p in parts] == ["reasoning", "text", "tool_call", "tool_call"]
    assert (parts[0].reasoning.text, parts[0].signature) == ("hmm", "sig")
    assert parts[1].text == "Let me check."
    assert [(p.tool_call.id, p.tool_call.arguments) for p in parts[2:]] == [("a", '{"x": 1}'), ("b", "{}")]
    assert all(p.index == 0 for p in parts), "folded parts carry no stream index"


def test_finish_usage_and_response_id_are_kept():
    folder = Folder()
    folder.add(Chunk(parts=[P(text="a")], response_id="first"))
    folder.add(Chunk(finish=2, response_id="later"))
    assert (folder.finish, folder.response_id, folder.text()) == (2, "first", "a")


@pytest.mark.parametrize(
    "deltas",
    [
        [P(index=1, text="skips ahead")],
        [P(index=0, text="a"), P(index=0, reasoning=content_pb2.Reasoning(text="b"))],
        [P(index=0)],
    ],
    ids=["gap", "kind-change", "no-data"],
)
def test_provider_bugs_are_assertions(deltas):
    with pytest.raises(AssertionError):
        fold(*deltas)
