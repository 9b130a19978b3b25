"""The Anthropic Messages API wire format for the conformance suite (tests/fakes/anthropic_fake.py bytes)."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from server.providers.anthropic import AnthropicProvider
from server.providers.anthropic.wire import DEFAULT_MAX_TOKENS, JSON_INSTRUCTION
from tests.conformance.vendor import CallSpec, Sent, UsageSpec, normalized
from tests.fakes import KEY
from tests.fakes import anthropic_fake as an
from tests.fakes.http import Recorded, Reply, Respond

_STOP_REASONS = {"stop": "end_turn", "max_tokens": "max_tokens", "content_filter": "refusal"}
_TOOL_CHOICES = {"auto": "auto", "none": "none", "any": "required"}


def _usage(usage: UsageSpec | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    # Anthropic counts cached prompt tokens apart from input_tokens.
    uncached = usage.prompt - (usage.cached or 0) - (usage.cache_write or 0)
    return an.usage_object(
        uncached,
        usage.completion,
        cache_read=usage.cached,
        cache_write=usage.cache_write,
        thinking=usage.reasoning,
    )


class AnthropicVendor:
    name = "anthropic"
    sends_history_reasoning = True
    tool_error_flag = True
    signs_reasoning = True
    # Thinking blocks must go back on the next tool turn, so signed ones are returned unasked.
    returns_signed_reasoning_unasked = True
    # Extended thinking budgets (wire.EFFORT_BUDGETS); not asked to return it, so display "omitted".
    reasoning_for_high_effort: ClassVar = {
        "thinking": {"type": "enabled", "budget_tokens": 16384, "display": "omitted"}
    }
    reasoning_for_budget_2048: ClassVar = {
        "thinking": {"type": "enabled", "budget_tokens": 2048, "display": "omitted"}
    }
    http_failures = (
        ("400", an.error(400, "invalid_request_error", "max_tokens: too big"), "BAD_REQUEST", 400),
        ("401", an.error(401, "authentication_error", f"invalid x-api-key {KEY}"), "AUTHENTICATION", 401),
        ("402", an.error(402, "billing_error", "credit balance too low"), "AUTHENTICATION", 402),
        ("403", an.error(403, "permission_error", "no access"), "AUTHENTICATION", 403),
        ("404", an.error(404, "not_found_error", "model: model-1"), "MODEL_NOT_FOUND", 404),
        ("408", an.error(408, "timeout_error", "Request timed out"), "TIMEOUT", 408),
        ("413", an.error(413, "request_too_large", "Request exceeds the maximum"), "CONTEXT_TOO_LONG", 413),
        ("429", an.error(429, "rate_limit_error", "Number of requests exceeded"), "RATE_LIMITED", 429),
        ("500", an.error(500, "api_error", "Internal server error"), "SERVER_ERROR", 500),
        ("504", an.error(504, "timeout_error", "Request timed out"), "TIMEOUT", 504),
        ("529", an.error(529, "overloaded_error", "Overloaded"), "SERVER_ERROR", 529),
        ("502-html", Respond(502, b"<html>502</html>", content_type="text/html"), "SERVER_ERROR", 502),
    )  # fmt: skip

    # A key the typed request does not control, and where it lands in the body.
    passthrough_example = ("cache_control", {"type": "ephemeral"}, lambda body: body["cache_control"])

    def supported_usage(self, usage: UsageSpec) -> UsageSpec:
        """Anthropic reports every detail: thinking, cache reads and cache writes."""
        return usage

    def provider(self, base_url: str, **options: Any) -> AnthropicProvider:
        options = {"max_retries": 0, "timeout_seconds": 10.0, **options}
        return AnthropicProvider("anthropic", base_url=base_url, api_key=KEY, **options)

    def rate_limited(self, retry_after: str) -> Reply:
        return an.error(429, "rate_limit_error", "slow down", headers={"retry-after": retry_after})

    def text_reply(self, pieces: list[str], *, finish: str = "stop", usage: UsageSpec | None = None) -> Reply:
        events = an.answer([an.text_block(0, pieces, with_ping=False)], stop_reason=_STOP_REASONS[finish],
                           usage=_usage(usage))  # fmt: skip
        return an.stream(events)

    def tool_calls_reply(
        self,
        calls: list[CallSpec],
        *,
        text: str = "",
        interleave: bool = False,
        usage: UsageSpec | None = None,
    ) -> Reply:
        # Anthropic streams blocks one after another, so parallel calls are
        # tool_use blocks back to back. What can differ is the block index:
        # in the parallel case an empty text block comes first (Claude emits
        # those), which yields no part - our part indexes are not Anthropic's.
        blocks: list[list[bytes]] = []
        if text:
            blocks.append(an.text_block(0, [text], with_ping=False))
        elif interleave:
            blocks.append(an.text_block(0, [], with_ping=False))
        for call in calls:
            blocks.append(an.tool_use_block(len(blocks), call.id, call.name, call.fragments()))
        return an.stream(an.answer(blocks, stop_reason="tool_use", usage=_usage(usage)))

    def reasoning_reply(
        self, reasoning: list[str], text: list[str], *, signature: str = "", usage: UsageSpec | None = None
    ) -> Reply:
        blocks = [an.thinking_block(0, reasoning, signature), an.text_block(1, text, with_ping=False)]
        return an.stream(an.answer(blocks, usage=_usage(usage)))

    def reasoning_then_tool_call_reply(
        self, reasoning: list[str], call: CallSpec, *, signature: str = ""
    ) -> Reply:
        blocks = [
            an.thinking_block(0, reasoning, signature),
            an.tool_use_block(1, call.id, call.name, call.fragments()),
        ]
        return an.stream(an.answer(blocks, stop_reason="tool_use", usage=_usage(UsageSpec(20, 30))))

    def _started(self, pieces: list[str]) -> list[bytes]:
        """message_start and a text block's start and deltas: no block stop, no message_stop."""
        return [an.message_start(_usage(UsageSpec(5, 1))), *an.text_block(0, pieces)[:-1]]

    def cut_reply(self, pieces: list[str]) -> Reply:
        return an.stream(self._started(pieces), end="cut")  # the socket closes before message_stop

    def held_reply(self, pieces: list[str]) -> Reply:
        return an.stream(self._started(pieces), end="hold")  # then silence, the connection open

    def stream_error_reply(self, pieces: list[str]) -> Reply:
        return an.stream([*self._started(pieces), an.error_event("overloaded_error", "Overloaded")])

    def malformed_reply(self) -> Reply:
        events = an.answer([an.text_block(0, ["ok"])])
        broken = b'event: content_block_delta\ndata: {"type": "content_\n\n'
        return an.stream([*events[:3], broken, *events[3:]])

    def html_reply(self) -> Reply:
        return Respond(200, b"<html>gateway</html>", content_type="text/html")

    # --- requests, read back -------------------------------------------------------------------

    def decode(self, recorded: Recorded) -> Sent:
        """The inverse of wire.chat_body. Two things cannot be told apart from the body alone:
        max_tokens equal to the default (budget + 1024 with thinking) reads as "not set", and
        a system prompt ending in JSON_INSTRUCTION as TYPE_JSON."""
        body = recorded.json()
        assert recorded.path == "/v1/messages", recorded.path
        assert "anthropic-version" in recorded.headers, "the Messages API refuses a request without one"
        system = body.get("system", "")
        assert isinstance(system, str), "system is sent as one string"
        response_format = None
        if system == JSON_INSTRUCTION or system.endswith(f"\n\n{JSON_INSTRUCTION}"):
            system = system.removesuffix(JSON_INSTRUCTION).removesuffix("\n\n")
            response_format = ("json",)
        fmt = (body.get("output_config") or {}).get("format")
        if fmt is not None:
            assert fmt["type"] == "json_schema", fmt
            response_format = ("json_schema", fmt["schema"])
        messages: list[tuple[str, list]] = []
        previous = None
        for message in body["messages"]:
            role = message["role"]
            assert role in ("user", "assistant") and role != previous, "roles alternate"
            previous = role
            blocks = message["content"]
            if isinstance(blocks, str):
                blocks = [{"type": "text", "text": blocks}]
            if role == "assistant":
                messages.append(("assistant", [_assistant_part(b) for b in blocks]))
                continue
            results = [b for b in blocks if b["type"] == "tool_result"]
            rest = blocks[len(results) :]
            assert all(b["type"] != "tool_result" for b in rest), "tool results come first"
            if results:
                messages.append(("tool", [_tool_result(b) for b in results]))
            if rest:
                messages.append(("user", [_user_part(b) for b in rest]))
        choice = body.get("tool_choice")
        if choice is not None:
            choice = (
                f"function:{choice['name']}" if choice["type"] == "tool" else _TOOL_CHOICES[choice["type"]]
            )
        budget = (body.get("thinking") or {}).get("budget_tokens") or 0
        max_tokens = body["max_tokens"]
        return normalized(
            Sent(
                model=body["model"],
                system=system,
                messages=messages,
                tools=[
                    (t["name"], t.get("description", ""), t["input_schema"]) for t in body.get("tools") or ()
                ],
                tool_choice=choice,
                response_format=response_format,
                max_output_tokens=None if max_tokens == DEFAULT_MAX_TOKENS + budget else max_tokens,
                stream=body.get("stream") is True,
            )
        )

    def reasoning_sent(self, recorded: Recorded) -> dict[str, Any]:
        body = recorded.json()
        sent: dict[str, Any] = {}
        if "thinking" in body:
            sent["thinking"] = body["thinking"]
        effort = (body.get("output_config") or {}).get("effort")
        if effort is not None:
            sent["effort"] = effort
        return sent


def _assistant_part(block: dict[str, Any]) -> tuple:
    kind = block["type"]
    if kind == "text":
        return ("text", block["text"])
    if kind == "tool_use":
        assert isinstance(block["input"], dict), "input is an object, not JSON text"
        return ("tool_call", block["id"], block["name"], block["input"])
    if kind == "thinking":
        return ("reasoning", block["thinking"], block["signature"])
    assert kind == "redacted_thinking", kind
    return ("reasoning", "", "")  # its data is encrypted_content, which Sent does not model


def _tool_result(block: dict[str, Any]) -> tuple:
    return ("tool_result", block["tool_use_id"], block.get("content", ""), block.get("is_error", False))


def _user_part(block: dict[str, Any]) -> tuple:
    if block["type"] == "text":
        return ("text", block["text"])
    assert block["type"] == "image", block
    source = block["source"]
    if source["type"] == "base64":
        return ("image", source["media_type"], base64.b64decode(source["data"]))
    return ("image_uri", source["url"])


VENDOR = AnthropicVendor()
