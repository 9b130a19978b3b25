"""What a vendor must offer the conformance suite: scripted answers and a decoder.

The suite (tests/conformance/test_*.py) asserts the same behaviour for every
provider. It speaks to each vendor's fake through a `Vendor`:

- answers in our terms (`text_reply`, `tool_calls_reply`, `reasoning_reply`,
  errors ...), which the vendor module turns into its exact wire bytes -
  SSE framing, event names, id fields, usage fields - so a test says "two
  parallel tool calls, arguments split in 7 pieces" once for all vendors;
- `decode(recorded)`, the inverse of the provider's request translation: the
  vendor's request body read back into a normalized `Sent`, which the suite
  compares with what the request said (`expected_sent`). That is how a
  multi-turn tool conversation, an image or a schema is shown to round-trip.

A vendor module is tests/conformance/vendors/<name>.py with a `VENDOR`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Protocol

from google.protobuf import json_format

from aigc.v1 import aigc_service_pb2, content_pb2, generation_pb2
from server.providers.base import Provider, parts_of
from tests.fakes.http import Recorded, Reply

PartTuple = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class UsageSpec:
    """The usage the caller must see; each vendor encodes it in its own wire fields."""

    prompt: int
    completion: int
    reasoning: int | None = None
    cached: int | None = None
    cache_write: int | None = None

    def proto(self) -> generation_pb2.Usage:
        usage = generation_pb2.Usage(
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            total_tokens=self.prompt + self.completion,
        )
        if self.reasoning is not None:
            usage.reasoning_tokens = self.reasoning
        if self.cached is not None:
            usage.cached_prompt_tokens = self.cached
        if self.cache_write is not None:
            usage.cache_write_prompt_tokens = self.cache_write
        return usage


@dataclasses.dataclass(frozen=True)
class CallSpec:
    """A tool call the fake makes: `arguments` sent in `pieces` fragments."""

    id: str
    name: str
    arguments: str
    pieces: int = 1

    def fragments(self) -> list[str]:
        """`arguments` cut into `pieces` parts, at character (not byte) boundaries."""
        n = max(1, min(self.pieces, len(self.arguments)))
        size = -(-len(self.arguments) // n)
        return [self.arguments[i : i + size] for i in range(0, len(self.arguments), size)] or [""]


@dataclasses.dataclass
class Sent:
    """A vendor request read back into our terms (see `decode`)."""

    model: str
    system: str = ""
    # (role, parts): role is user / assistant / tool; parts are tuples:
    #   ("text", str) ("image", mime, bytes) ("image_uri", uri) ("tool_call", id, name, args dict)
    #   ("tool_result", id, content, is_error) ("reasoning", text, signature)
    messages: list[tuple[str, list[PartTuple]]] = dataclasses.field(default_factory=list)
    tools: list[tuple[str, str, dict]] = dataclasses.field(default_factory=list)
    # "auto" | "none" | "required" | "function:NAME" | None
    tool_choice: str | None = None
    # None | ("json",) | ("json_schema", schema)
    response_format: tuple | None = None
    max_output_tokens: int | None = None
    stream: bool = True


class Vendor(Protocol):
    name: str
    #: Whether reasoning parts of earlier turns go back to the vendor.
    sends_history_reasoning: bool
    #: Whether the vendor's tool results carry an error flag.
    tool_error_flag: bool
    #: The HTTP error table for this vendor: (reply, failure name, upstream status).
    http_failures: Sequence[tuple[str, Reply, str, int]]

    def provider(self, base_url: str, **options: Any) -> Provider: ...

    def text_reply(
        self, pieces: list[str], *, finish: str = "stop", usage: UsageSpec | None = None
    ) -> Reply: ...

    def tool_calls_reply(
        self,
        calls: list[CallSpec],
        *,
        text: str = "",
        interleave: bool = False,
        usage: UsageSpec | None = None,
    ) -> Reply: ...

    def reasoning_reply(
        self, reasoning: list[str], text: list[str], *, signature: str = "", usage: UsageSpec | None = None
    ) -> Reply: ...

    def cut_reply(self, pieces: list[str]) -> Reply: ...

    def stream_error_reply(self, pieces: list[str]) -> Reply: ...

    def malformed_reply(self) -> Reply: ...

    def decode(self, recorded: Recorded) -> Sent: ...

    def reasoning_sent(self, recorded: Recorded) -> dict[str, Any]: ...


def expected_sent(request: aigc_service_pb2.ChatRequest, vendor: Vendor, model: str) -> Sent:
    """What `vendor.decode` must give for `request` (the translation's contract)."""
    system: list[str] = []
    messages: list[tuple[str, list[PartTuple]]] = []
    for message in request.messages:
        if message.role == content_pb2.ROLE_SYSTEM:
            system.append("".join(p.text for p in parts_of(message)))
            continue
        role = {content_pb2.ROLE_USER: "user", content_pb2.ROLE_ASSISTANT: "assistant"}.get(
            message.role, "tool"
        )
        parts = [_expected_part(p, vendor) for p in parts_of(message)]
        messages.append((role, [p for p in parts if p is not None]))
    fmt = request.response_format
    response_format: tuple | None = None
    if fmt.type == generation_pb2.ResponseFormat.TYPE_JSON:
        response_format = ("json",)
    elif fmt.type == generation_pb2.ResponseFormat.TYPE_JSON_SCHEMA:
        response_format = ("json_schema", _dict(fmt.schema))
    tool_choice = None
    if request.HasField("tool_choice"):
        choice = request.tool_choice
        if choice.function_name:
            tool_choice = f"function:{choice.function_name}"
        else:
            tool_choice = {1: "auto", 2: "none", 3: "required"}.get(choice.mode)
    config = request.generation_config
    return normalized(
        Sent(
            model=model,
            system="\n\n".join(system),
            messages=messages,
            tools=[
                (t.function.name, t.function.description, _dict(t.function.parameters)) for t in request.tools
            ],
            tool_choice=tool_choice,
            response_format=response_format,
            max_output_tokens=config.max_output_tokens if config.HasField("max_output_tokens") else None,
        )
    )


def normalized(sent: Sent) -> Sent:
    """Consecutive messages of one role merged, consecutive text parts joined: vendors
    differ in how they group turns (one tool message per result, or one user message
    with every result), not in what they say."""
    merged: list[tuple[str, list[PartTuple]]] = []
    for role, parts in sent.messages:
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(parts)
        else:
            merged.append((role, list(parts)))
    for _, parts in merged:
        joined: list[PartTuple] = []
        for part in parts:
            if part[0] == "text" and joined and joined[-1][0] == "text":
                joined[-1] = ("text", joined[-1][1] + part[1])
            else:
                joined.append(part)
        parts[:] = joined
    sent.messages = merged
    return sent


def _expected_part(part: content_pb2.Part, vendor: Vendor) -> PartTuple | None:
    kind = part.WhichOneof("data")
    if kind == "text":
        return ("text", part.text)
    if kind == "image":
        if part.image.WhichOneof("source") == "uri":
            return ("image_uri", part.image.uri)
        return ("image", part.image.mime_type, part.image.data)
    if kind == "tool_call":
        call = part.tool_call
        return ("tool_call", call.id, call.name, json.loads(call.arguments or "{}"))
    if kind == "tool_result":
        result = part.tool_result
        return (
            "tool_result",
            result.tool_call_id,
            result.content,
            result.is_error and vendor.tool_error_flag,
        )
    if kind == "reasoning":
        if not vendor.sends_history_reasoning:
            return None
        return ("reasoning", part.reasoning.text, part.signature)
    raise AssertionError(kind)


def _dict(struct: Any) -> dict:
    from server.providers.vendor_params import integral_numbers

    return integral_numbers(json_format.MessageToDict(struct)) if struct.ListFields() else {}
