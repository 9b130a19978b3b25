"""Part deltas (aigc.v1 `Part.index`) put in the one-block-at-a-time order the agent APIs need.

Anthropic's Messages and OpenAI's Responses streams send one content block /
output item at a time - opened, its deltas, closed - while our part deltas
may interleave (parallel tool calls, see Part.index). PartOrder turns the
deltas into ("open" | "delta", part) and ("close", first part) steps in that
order, as early as they can be known:

- the open part's deltas go out at once;
- a text or reasoning part ends when another part starts (providers never
  return to one), so its text streams live;
- a tool call stays open until the answer ends: deltas of other parts that
  arrive meanwhile wait, in order, and go out when their turn comes.

Each door renders the steps in its own events (anthropic_door/wire.py,
openai_compat/responses_wire.py). Also the signatures riding in ids, which
both doors need: a signature on a tool call (Gemini's `thoughtSignature` on
a function call, which Gemini refuses the next turn without) has no field
in either API's tool call, so it travels in the call's id,
`<id>` + SIGNATURE_MARK + `<signature>`: callers echo ids unchanged, and the
door splits them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from aigc.v1 import content_pb2

SIGNATURE_MARK = ".sig."

Step = tuple[str, content_pb2.Part]


def signed_id(call_id: str, signature: str) -> str:
    return f"{call_id}{SIGNATURE_MARK}{signature}" if signature else call_id


def split_signature(call_id: str) -> tuple[str, str]:
    """(the tool call's own id, the signature riding in it, or "")."""
    plain, mark, signature = call_id.partition(SIGNATURE_MARK)
    return (plain, signature) if mark else (call_id, "")


class PartOrder:
    def __init__(self) -> None:
        self._open: content_pb2.Part | None = None  # the first delta of the open part
        self._waiting: dict[int, list[content_pb2.Part]] = {}

    def feed(self, parts: Iterable[content_pb2.Part]) -> Iterator[Step]:
        for part in parts:
            if self._open is not None and part.index == self._open.index:
                yield "delta", part
            elif self._open is not None and self._open.WhichOneof("data") == "tool_call":
                self._waiting.setdefault(part.index, []).append(part)
            else:
                yield from self._close()
                self._open = part
                yield "open", part

    def finish(self) -> Iterator[Step]:
        yield from self._close()
        while self._waiting:
            first, *rest = self._waiting.pop(min(self._waiting))
            yield "open", first
            for part in rest:
                yield "delta", part
            self._open = first
            yield from self._close()

    def _close(self) -> Iterator[Step]:
        if self._open is not None:
            opened, self._open = self._open, None
            yield "close", opened


__all__ = ["SIGNATURE_MARK", "PartOrder", "signed_id", "split_signature"]
