"""The OpenAI wire format for the conformance suite (tests/fakes/openai_fake.py bytes)."""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

from server.providers.openai import OpenAICompatProvider
from tests.conformance.vendor import CallSpec, Sent, UsageSpec, normalized
from tests.fakes import KEY
from tests.fakes import openai_fake as oa
from tests.fakes.http import Recorded, Reply, Respond


def _usage(usage: UsageSpec | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return oa.usage_object(usage.prompt, usage.completion, reasoning=usage.reasoning, cached=usage.cached)


class OpenAIVendor:
    name = "openai"
    sends_history_reasoning = False
    tool_error_flag = False
    signs_reasoning = False
    returns_signed_reasoning_unasked = False
    reasoning_for_high_effort: ClassVar[dict[str, Any]] = {"effort": "high"}
    reasoning_for_budget_2048 = None  # refused: Chat Completions has no budget field
    http_failures = (
        ("400", oa.error(400, "bad temperature"), "BAD_REQUEST", 400),
        ("400-context", oa.error(400, "too long", code="context_length_exceeded"), "CONTEXT_TOO_LONG", 400),
        ("413", oa.error(413, "request too large"), "CONTEXT_TOO_LONG", 413),
        ("400-filter", oa.error(400, "flagged", code="content_filter"), "CONTENT_FILTERED", 400),
        (
            "401",
            oa.error(401, f"Incorrect API key provided: {KEY}", code="invalid_api_key"),
            "AUTHENTICATION",
            401,
        ),
        ("403", oa.error(403, "region not supported"), "AUTHENTICATION", 403),
        ("404", oa.error(404, "The model does not exist", code="model_not_found"), "MODEL_NOT_FOUND", 404),
        ("408", oa.error(408, "request timeout"), "TIMEOUT", 408),
        ("429", oa.error(429, "slow down", code="rate_limit_exceeded"), "RATE_LIMITED", 429),
        ("500", oa.error(500, "boom", type="server_error"), "SERVER_ERROR", 500),
        ("503", oa.error(503, "overloaded", type="server_error"), "SERVER_ERROR", 503),
    )

    # A key the typed request does not control, and where it lands in the body.
    passthrough_example = ("logit_bias", {"42": -100}, lambda body: body["logit_bias"])

    def supported_usage(self, usage: UsageSpec) -> UsageSpec:
        """`usage` without the details this vendor never reports (cache writes)."""
        return UsageSpec(usage.prompt, usage.completion, usage.reasoning, usage.cached)

    def provider(self, base_url: str, **options: Any) -> OpenAICompatProvider:
        options = {"max_retries": 0, "timeout_seconds": 10.0, **options}
        return OpenAICompatProvider("openai", base_url=f"{base_url}/v1", api_key=KEY, **options)

    def rate_limited(self, retry_after: str) -> Reply:
        return oa.error(429, "slow down", code="rate_limit_exceeded", headers={"retry-after": retry_after})

    def text_reply(self, pieces: list[str], *, finish: str = "stop", usage: UsageSpec | None = None) -> Reply:
        reason = {"stop": "stop", "max_tokens": "length", "content_filter": "content_filter"}[finish]
        deltas = [{"content": p} for p in pieces]
        return oa.stream(oa.delta_events(deltas, finish=reason, usage=_usage(usage)))

    def tool_calls_reply(
        self,
        calls: list[CallSpec],
        *,
        text: str = "",
        interleave: bool = False,
        usage: UsageSpec | None = None,
    ) -> Reply:
        deltas: list[dict[str, Any]] = [{"content": text}] if text else []
        pieces = [call.fragments() for call in calls]
        if interleave:
            # Every call's first delta, then their fragments in turn.
            for index, call in enumerate(calls):
                deltas.append(oa.tool_call_delta(index, id=call.id, name=call.name))
            for round_ in range(max(len(p) for p in pieces)):
                for index, fragments in enumerate(pieces):
                    if round_ < len(fragments):
                        deltas.append(oa.tool_call_delta(index, arguments=fragments[round_]))
        else:
            for index, (call, fragments) in enumerate(zip(calls, pieces, strict=True)):
                deltas.append(oa.tool_call_delta(index, id=call.id, name=call.name))
                deltas += [oa.tool_call_delta(index, arguments=f) for f in fragments]
        return oa.stream(oa.delta_events(deltas, finish="tool_calls", usage=_usage(usage)))

    def reasoning_reply(
        self, reasoning: list[str], text: list[str], *, signature: str = "", usage: UsageSpec | None = None
    ) -> Reply:
        deltas = [{"reasoning_content": r, "content": None} for r in reasoning] + [
            {"content": t} for t in text
        ]
        return oa.stream(oa.delta_events(deltas, usage=_usage(usage)))

    def reasoning_then_tool_call_reply(
        self, reasoning: list[str], call: CallSpec, *, signature: str = ""
    ) -> Reply:
        deltas: list[dict[str, Any]] = [{"reasoning_content": r} for r in reasoning]
        deltas.append(oa.tool_call_delta(0, id=call.id, name=call.name))
        deltas += [oa.tool_call_delta(0, arguments=f) for f in call.fragments()]
        return oa.stream(oa.delta_events(deltas, finish="tool_calls"))

    def cut_reply(self, pieces: list[str]) -> Reply:
        events = oa.delta_events([{"content": p} for p in pieces], finish=None)
        return oa.stream(events[:-1], end="cut")  # no [DONE], the socket closes

    def held_reply(self, pieces: list[str]) -> Reply:
        events = oa.delta_events([{"content": p} for p in pieces], finish=None)
        return oa.stream(events[:-1], end="hold")  # then silence, the connection open

    def stream_error_reply(self, pieces: list[str]) -> Reply:
        events = oa.delta_events([{"content": p} for p in pieces], finish=None)[:-1]
        error = oa.event(
            {"error": {"message": "The server had an error", "type": "server_error", "code": None}}
        )
        return oa.stream([*events, error])

    def malformed_reply(self) -> Reply:
        events = oa.delta_events([{"content": "ok"}])
        return oa.stream([events[0], b'data: {"id": "x", "choices": [{"delta": \n\n', *events[1:]])

    def html_reply(self) -> Reply:
        return Respond(200, b"<html>gateway</html>", content_type="text/html")

    # --- requests, read back -------------------------------------------------------------------

    def decode(self, recorded: Recorded) -> Sent:
        body = recorded.json()
        assert recorded.path == "/v1/chat/completions", recorded.path
        system: list[str] = []
        messages: list[tuple[str, list]] = []
        for message in body["messages"]:
            role = message["role"]
            if role == "system":
                system.append(message["content"])
            elif role == "tool":
                messages.append(
                    ("tool", [("tool_result", message["tool_call_id"], message["content"], False)])
                )
            elif role == "assistant":
                parts: list = [("text", message["content"])] if message.get("content") else []
                for call in message.get("tool_calls") or ():
                    function = call["function"]
                    parts.append(
                        ("tool_call", call["id"], function["name"], json.loads(function["arguments"]))
                    )
                messages.append(("assistant", parts))
            else:
                content = message["content"]
                if isinstance(content, str):
                    messages.append((role, [("text", content)]))
                else:
                    messages.append((role, [_user_part(p) for p in content]))
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            choice = f"function:{choice['function']['name']}"
        fmt = body.get("response_format")
        response_format = None
        if fmt and fmt["type"] == "json_object":
            response_format = ("json",)
        elif fmt and fmt["type"] == "json_schema":
            response_format = ("json_schema", fmt["json_schema"]["schema"])
        return normalized(
            Sent(
                model=body["model"],
                system="\n\n".join(system),
                messages=messages,
                tools=[
                    (t["function"]["name"], t["function"].get("description", ""), t["function"]["parameters"])
                    for t in body.get("tools") or ()
                ],
                tool_choice=choice,
                response_format=response_format,
                max_output_tokens=body.get("max_tokens", body.get("max_completion_tokens")),
                stream=body.get("stream") is True and body.get("stream_options") == {"include_usage": True},
            )
        )

    def reasoning_sent(self, recorded: Recorded) -> dict[str, Any]:
        body = recorded.json()
        return {"effort": body["reasoning_effort"]} if "reasoning_effort" in body else {}


def _user_part(part: dict[str, Any]) -> tuple:
    if part["type"] == "text":
        return ("text", part["text"])
    url = part["image_url"]["url"]
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        return ("image", head.removeprefix("data:").removesuffix(";base64"), base64.b64decode(data))
    return ("image_uri", url)


VENDOR = OpenAIVendor()
