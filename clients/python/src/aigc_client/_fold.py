"""Folding a stream into the whole answer, as the proto's service comment says.

Every stream message but the last carries part deltas, each with the `index`
of the part of the answer it extends: text and reasoning deltas append text,
tool call deltas append `arguments` (and repeat `id` and `name`). The last
message has no parts; it holds `finish_reason` and `usage` (or `error`).
The folded answer equals the unary answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from aigc.v1 import aigc_service_pb2, content_pb2


class ChatFolder:
    """Collects the messages of a StreamChat call; `response()` is the folded answer."""

    def __init__(self) -> None:
        self._parts: list[content_pb2.Part] = []
        self._first: aigc_service_pb2.ChatResponse | None = None
        self._last: aigc_service_pb2.ChatResponse | None = None

    def add(self, response: aigc_service_pb2.ChatResponse) -> list[content_pb2.Part]:
        """Adds one stream message; returns its part deltas (for printing as they come)."""
        if self._first is None:
            self._first = response
        self._last = response
        deltas = list(response.message.parts)
        for delta in deltas:
            self._apply(delta)
        return deltas

    @property
    def parts(self) -> list[content_pb2.Part]:
        """The answer's parts so far, each whole (index 0, as in unary answers)."""
        return self._parts

    @property
    def text(self) -> str:
        """The answer's text parts so far, joined."""
        return text_of(self._parts)

    @property
    def finished(self) -> bool:
        """Whether the last message (with the finish reason) has arrived."""
        return self._last is not None and self._last.finish_reason != 0

    def response(self) -> aigc_service_pb2.ChatResponse:
        """The stream as one ChatResponse: the shape Chat returns."""
        out = aigc_service_pb2.ChatResponse()
        if self._first is not None:
            out.id, out.model, out.provider = self._first.id, self._first.model, self._first.provider
            if self._first.HasField("create_time"):
                out.create_time.CopyFrom(self._first.create_time)
        out.message.role = content_pb2.ROLE_ASSISTANT
        out.message.parts.extend(self._parts)
        if self._last is not None:
            out.finish_reason = self._last.finish_reason
            if self._last.HasField("usage"):
                out.usage.CopyFrom(self._last.usage)
            if self._last.HasField("error"):
                out.error.CopyFrom(self._last.error)
        return out

    def _apply(self, delta: content_pb2.Part) -> None:
        kind = delta.WhichOneof("data")
        if delta.index == len(self._parts):
            part = content_pb2.Part()
            part.CopyFrom(delta)
            part.index = 0
            self._parts.append(part)
            return
        if delta.index > len(self._parts) or self._parts[delta.index].WhichOneof("data") != kind:
            raise ValueError(
                f"stream delta for part {delta.index} ({kind}) does not extend "
                f"the {len(self._parts)} parts so far"
            )
        part = self._parts[delta.index]
        if kind == "text":
            part.text += delta.text
        elif kind == "reasoning":
            part.reasoning.text += delta.reasoning.text
            part.reasoning.encrypted_content += delta.reasoning.encrypted_content
        elif kind == "tool_call":
            part.tool_call.arguments += delta.tool_call.arguments
        if delta.signature:
            part.signature = delta.signature


def fold_chat(responses: Iterable[aigc_service_pb2.ChatResponse]) -> aigc_service_pb2.ChatResponse:
    """Consumes StreamChat messages and returns the folded answer."""
    folder = ChatFolder()
    for response in responses:
        folder.add(response)
    return folder.response()


def text_of(
    source: aigc_service_pb2.ChatResponse | content_pb2.Message | Iterable[content_pb2.Part],
) -> str:
    """The text parts of a response, a message or parts (e.g. a stream message's deltas), joined."""
    if isinstance(source, aigc_service_pb2.ChatResponse):
        source = source.message.parts
    elif isinstance(source, content_pb2.Message):
        source = source.parts
    return "".join(part.text for part in source if part.WhichOneof("data") == "text")
