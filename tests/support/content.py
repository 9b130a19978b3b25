"""Reading typed answers in tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aigc.v1 import content_pb2


def text_of(message: content_pb2.Message) -> str:
    """The text parts of a message (or of a stream delta's message), joined."""
    return "".join(p.text for p in message.parts if p.WhichOneof("data") == "text")


def json_text(body: dict[str, Any]) -> str:
    """The same, from the JSON of a ChatResponse (HTTP or grpcurl)."""
    parts = (body.get("message") or {}).get("parts") or []
    return "".join(p.get("text", "") for p in parts)


def fold_deltas(deltas: Iterable[Sequence[content_pb2.Part]]) -> list[content_pb2.Part]:
    """What a client does with the deltas (written from the proto's comment, not from fold.py)."""
    parts: list[content_pb2.Part] = []
    for message in deltas:
        for delta in message:
            if delta.index == len(parts):
                part = content_pb2.Part()
                part.CopyFrom(delta)
                part.index = 0
                parts.append(part)
                continue
            part = parts[delta.index]
            kind = delta.WhichOneof("data")
            assert part.WhichOneof("data") == kind
            if kind == "text":
                part.text += delta.text
            elif kind == "reasoning":
                part.reasoning.text += delta.reasoning.text
                part.reasoning.encrypted_content += delta.reasoning.encrypted_content
            elif kind == "tool_call":
                assert delta.tool_call.id == part.tool_call.id, "every delta repeats the call's id"
                assert delta.tool_call.name == part.tool_call.name, "every delta repeats the call's name"
                part.tool_call.arguments += delta.tool_call.arguments
            if delta.signature:
                part.signature = delta.signature
    return parts
