"""Reasoning and its signatures through the OpenAI-compatible door, as `reasoning_details`.

Chat Completions has no field for reasoning, let alone for the opaque tokens
a vendor attaches to it (Part.signature): Claude with thinking refuses a
tool loop's next turn unless it starts with the signed thinking block, and
Gemini 3 refuses function calls that come back without their
thoughtSignature. Clients of OpenAI-compatible servers carry these in one of
two extensions: LiteLLM's `thinking_blocks` (Anthropic's block shapes,
`{type: thinking, thinking, signature}` / `{type: redacted_thinking, data}`)
and OpenRouter's `reasoning_details`. We use OpenRouter's, because it holds
every kind of signature we have, in answer order, where `thinking_blocks`
holds Anthropic's only (LiteLLM puts Gemini's in the tool call id instead):

    {"type": "reasoning.text", "text": ..., "signature": ..., "index": n}
        a reasoning part (a signature alone is one with empty text, and so is
        the signature of a text part, which Gemini accepts back on a thought)
    {"type": "reasoning.encrypted", "data": ..., "index": n}
        encrypted reasoning (Anthropic's redacted_thinking)
    {"type": "reasoning.encrypted", "id": <tool call id>, "data": ..., "index": n}
        the signature of that tool call (Gemini's thoughtSignature)
    {"type": "reasoning.summary", "summary": ..., "index": n}
        accepted on input (OpenRouter sends it for OpenAI's models), as reasoning text

In streams each item is a delta keyed by `index` (text appended, the
signature whole on one delta), which is how the openai SDK's stream helper
and OpenRouter's clients fold them. `reasoning_content` (DeepSeek's field)
still carries the reasoning text for clients that read only that; a client
sending both back is read from `reasoning_details`, which has everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aigc.v1 import content_pb2

Json = dict[str, Any]
Problem = Callable[[str, str], None]

TEXT = "reasoning.text"
ENCRYPTED = "reasoning.encrypted"
SUMMARY = "reasoning.summary"


def detail(part: content_pb2.Part, index: int) -> Json | None:
    """The `reasoning_details` item for a part (or one delta of it), None if it has nothing to carry."""
    kind = part.WhichOneof("data")
    if kind == "reasoning":
        if part.reasoning.encrypted_content:
            item: Json = {"type": ENCRYPTED, "data": part.reasoning.encrypted_content}
        else:
            item = {"type": TEXT, "text": part.reasoning.text}
    elif part.signature and kind == "tool_call":
        item = {"type": ENCRYPTED, "id": part.tool_call.id, "data": part.signature}
        return {**item, "index": index}
    elif part.signature and kind == "text":
        item = {"type": TEXT, "text": ""}
    else:
        return None
    if part.signature:
        item["signature"] = part.signature
    item["index"] = index
    return item


def details(parts: Iterable[content_pb2.Part]) -> list[Json]:
    """`reasoning_details` for a whole answer, numbered in answer order."""
    out: list[Json] = []
    for part in parts:
        item = detail(part, len(out))
        if item is not None:
            out.append(item)
    return out


class Numbering:
    """Numbers stream parts for `reasoning_details[].index`: every delta of one part
    (Part.index) gets the same number, the first part that has an item 0, then 1, ..."""

    def __init__(self) -> None:
        self._numbers: dict[int, int] = {}

    def delta(self, part: content_pb2.Part) -> Json | None:
        number = self._numbers.get(part.index)
        item = detail(part, len(self._numbers) if number is None else number)
        if item is not None and number is None:
            self._numbers[part.index] = item["index"]
        return item


def parts(
    value: Any, where: str, problem: Problem
) -> tuple[list[content_pb2.Part], dict[str, tuple[str, str]]]:
    """(the reasoning parts, tool call id -> (signature, the item's field path)) of an
    assistant message's `reasoning_details`."""
    if not isinstance(value, list):
        problem(where, "must be an array of reasoning detail objects")
        return [], {}
    items = []
    for j, item in enumerate(value):
        if not isinstance(item, Mapping) or item.get("type") not in (TEXT, ENCRYPTED, SUMMARY):
            problem(f"{where}[{j}]", f"must be an object of type {TEXT}, {ENCRYPTED} or {SUMMARY}")
            continue
        index = item.get("index", j)
        if not isinstance(index, int) or isinstance(index, bool):
            problem(f"{where}[{j}].index", "must be a whole number")
            continue
        items.append((index, j, item))
    out: list[content_pb2.Part] = []
    signatures: dict[str, tuple[str, str]] = {}
    for _, j, item in sorted(items, key=lambda x: (x[0], x[1])):
        at = f"{where}[{j}]"
        kind = item["type"]
        if kind == ENCRYPTED:
            data = _string(item, "data", at, problem, required=True)
            call_id = _string(item, "id", at, problem)
            if call_id:
                signatures[call_id] = (data, at)
            elif data:
                out.append(content_pb2.Part(reasoning=content_pb2.Reasoning(encrypted_content=data)))
            continue
        text = _string(item, "text" if kind == TEXT else "summary", at, problem)
        signature = _string(item, "signature", at, problem)
        if text or signature:
            out.append(content_pb2.Part(reasoning=content_pb2.Reasoning(text=text), signature=signature))
    return out, signatures


def sign_calls(
    message: content_pb2.Message, signatures: Mapping[str, tuple[str, str]], problem: Problem
) -> None:
    """Puts each signature on the message's tool call with its id; an id with no such call is a problem."""
    by_id = {p.tool_call.id: p for p in message.parts if p.WhichOneof("data") == "tool_call"}
    for call_id, (signature, where) in signatures.items():
        part = by_id.get(call_id)
        if part is None:
            problem(f"{where}.id", "names no tool call of this message")
        else:
            part.signature = signature


def _string(
    item: Mapping[str, Any], key: str, where: str, problem: Problem, *, required: bool = False
) -> str:
    value = item.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        problem(f"{where}.{key}", "must be a string")
        return ""
    return value


__all__ = ["Numbering", "detail", "details", "parts", "sign_calls"]
