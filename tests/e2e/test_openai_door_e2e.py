"""The OpenAI-compatible door through the real Envoy (:8000/openai/v1), in front of fake
vendors, with the official openai Python SDK: answers from OpenAI, Anthropic and Gemini
alike in OpenAI's shapes (tool calls, usage), SSE passed through as it is written, Envoy's
limits on this route too, and the same fallbacks as the typed API.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import E2E, TIMEOUT
from tests.fakes import anthropic_fake, gemini_fake, openai_fake


@pytest.fixture
def client(e2e: E2E) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{e2e.stack.http}/openai/v1", api_key="unused", max_retries=0, timeout=TIMEOUT
    )


def ask(text: str = "hi") -> list[dict]:
    return [{"role": "user", "content": text}]


def test_an_anthropic_tool_call_comes_back_as_openai_tool_calls(e2e: E2E, client: openai.OpenAI):
    events = anthropic_fake.answer(
        [anthropic_fake.tool_use_block(0, "toolu_1", "get_weather", ['{"city":', ' "Paris"}'])],
        stop_reason="tool_use",
        usage=anthropic_fake.usage_object(12, 7),
    )
    e2e.fakes.anthropic.script(anthropic_fake.stream(events))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = client.chat.completions.create(model="claude-haiku-4-5", messages=ask("weather?"), tools=tools)
    (call,) = reply.choices[0].message.tool_calls
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "toolu_1",
        "get_weather",
        {"city": "Paris"},
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 7)
    sent = e2e.fakes.anthropic.requests[-1].json()
    assert sent["tools"][0]["name"] == "get_weather", "translated to Anthropic's own tools"


def test_a_gemini_stream_arrives_as_chunks_through_envoy(e2e: E2E, client: openai.OpenAI):
    pieces = ["Bonjour", ", le", " monde"]
    e2e.fakes.gemini.script(gemini_fake.stream(gemini_fake.stream_events(pieces), pause=0.3))
    stream = client.chat.completions.create(
        model="gemini-2.0-flash", messages=ask(), stream=True, stream_options={"include_usage": True}
    )
    arrivals, texts, usage = [], [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            texts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(texts) == "".join(pieces)
    assert arrivals[-1] - arrivals[0] > 0.4, "chunks arrived as written, not buffered to the end"
    assert usage is not None and usage.total_tokens > 0


def test_the_fallback_of_the_typed_api_holds_here(e2e: E2E, client: openai.OpenAI):
    e2e.fakes.anthropic.script(anthropic_fake.error(529, "overloaded_error", "Overloaded"))
    e2e.fakes.openai.script(openai_fake.stream(openai_fake.chat_events(["from the fallback"])))
    reply = client.chat.completions.create(model="claude-then-gpt", messages=ask())
    assert reply.choices[0].message.content == "from the fallback"
    assert reply.model == "gpt-4o-mini"


def test_a_vendor_error_is_the_sdks_exception_with_our_reason(e2e: E2E, client: openai.OpenAI):
    e2e.fakes.openai.script(
        openai_fake.error(429, "slow down", type="rate_limit_error", headers={"retry-after": "30"})
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=ask())
    assert caught.value.code == "UPSTREAM_RATE_LIMITED"
    assert caught.value.response.headers["retry-after"] == "30"
    assert caught.value.request_id == caught.value.response.headers["x-request-id"]


def test_envoys_limits_hold_on_this_route(e2e: E2E):
    plain = httpx.post(
        f"{e2e.stack.http}/openai/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert plain.status_code == 415
    assert plain.json()["details"][0]["reason"] == "UNSUPPORTED_MEDIA_TYPE"
    huge = httpx.post(
        f"{e2e.stack.http}/openai/v1/chat/completions",
        content=b"x" * (16 * 1024 * 1024 + 1),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert huge.status_code == 413


def test_models_lists_what_the_typed_api_lists(e2e: E2E, client: openai.OpenAI):
    ids = {m.id for m in client.models.list()}
    typed = {m["id"] for m in e2e.http.get("/v1/models", params={"page_size": 1000}).json()["models"]}
    assert ids == typed
