"""The one place a stream of part deltas becomes a whole answer.

A provider's chunks carry parts with `index` (aigc_service.proto): every
delta of one part has the same index; text and reasoning append text, tool
call deltas append `arguments` and repeat the call's id and name; a
signature arrives whole on one delta. `Folder.add` takes chunks as they come
and `Folder.answer()` gives the parts in index order, exactly what a client
folding the same stream gets - unary responses are built this way, so unary
and streaming can never disagree.

A delta that changes the kind of an existing part, or an index that skips
ahead, is a provider bug: AssertionError, which the core reports as INTERNAL.
"""

from __future__ import annotations

from aigc.v1 import content_pb2, generation_pb2
from server.providers.base import Chunk


class _Accumulated:
    __slots__ = ("arguments", "encrypted", "id", "image", "kind", "name", "result", "signature", "text")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.text: list[str] = []
        self.arguments: list[str] = []
        self.encrypted: list[str] = []
        self.id = ""
        self.name = ""
        self.signature = ""
        self.image: content_pb2.Image | None = None
        self.result: content_pb2.ToolResult | None = None

    def part(self) -> content_pb2.Part:
        part = content_pb2.Part(signature=self.signature)
        if self.kind == "text":
            part.text = "".join(self.text)
        elif self.kind == "reasoning":
            part.reasoning.text = "".join(self.text)
            part.reasoning.encrypted_content = "".join(self.encrypted)
        elif self.kind == "tool_call":
            part.tool_call.id = self.id
            part.tool_call.name = self.name
            part.tool_call.arguments = "".join(self.arguments)
        elif self.kind == "image":
            assert self.image is not None
            part.image.CopyFrom(self.image)
        else:
            raise AssertionError(f"a provider streamed a {self.kind} part")
        return part


class Folder:
    """Accumulates a stream's chunks: parts by index, finish, usage, response id."""

    __slots__ = ("_parts", "finish", "response_id", "usage")

    def __init__(self) -> None:
        self._parts: list[_Accumulated] = []
        #: The aigc.v1.FinishReason, 0 until the stream reported one.
        self.finish = 0
        self.usage: generation_pb2.Usage | None = None
        self.response_id = ""

    @property
    def started(self) -> bool:
        """True once any part delta arrived."""
        return bool(self._parts)

    def add(self, chunk: Chunk) -> None:
        for delta in chunk.parts:
            self._add_part(delta)
        if chunk.finish:
            self.finish = chunk.finish
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.response_id and not self.response_id:
            self.response_id = chunk.response_id

    def _add_part(self, delta: content_pb2.Part) -> None:
        kind = delta.WhichOneof("data")
        assert kind is not None, "a provider streamed a part with no data"
        index = delta.index
        parts = self._parts
        if index == len(parts):
            parts.append(_Accumulated(kind))
        assert index < len(parts), f"part index {index} skips ahead of {len(parts)} parts"
        acc = parts[index]
        assert acc.kind == kind, f"part {index} changed from {acc.kind} to {kind}"
        if delta.signature:
            acc.signature = delta.signature
        if kind == "text":
            acc.text.append(delta.text)
        elif kind == "reasoning":
            acc.text.append(delta.reasoning.text)
            if delta.reasoning.encrypted_content:
                acc.encrypted.append(delta.reasoning.encrypted_content)
        elif kind == "tool_call":
            call = delta.tool_call
            acc.id = acc.id or call.id
            acc.name = acc.name or call.name
            acc.arguments.append(call.arguments)
        elif kind == "image":
            acc.image = delta.image

    def parts(self) -> list[content_pb2.Part]:
        """The whole answer's parts, in order, without stream indexes."""
        return [acc.part() for acc in self._parts]

    def text(self) -> str:
        """The answer's text parts joined (what a completion returns)."""
        return "".join("".join(acc.text) for acc in self._parts if acc.kind == "text")


__all__ = ["Folder"]
