"""AnthropicProvider against a fake Messages API speaking Anthropic's exact wire format."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from server.errors import UpstreamError, UpstreamFailure
from server.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider
from server.providers.base import ChatMessage, Finish, GenerateRequest, Sampling, Usage
from tests.fakes import KEY
from tests.fakes import anthropic_fake as an
from tests.fakes.checks import check_error, collect, failure_of
from tests.fakes.http import FakeServer, Hang, Respond, closed_port, split_inside

F = UpstreamFailure
C = grpc.StatusCode


def chat(*messages: ChatMessage, **fields) -> GenerateRequest:
    return GenerateRequest(
        upstream_model="claude-fake", messages=messages or (ChatMessage("user", "hi"),), **fields
    )


@contextlib.asynccontextmanager
async def provider_for(fake: FakeServer, **options) -> AsyncIterator[AnthropicProvider]:
    options = {"max_retries": 0, "timeout_seconds": 10.0, **options}
    provider = AnthropicProvider("anthropic", base_url=fake.base_url, api_key=KEY, **options)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.close()


# --- answers -------------------------------------------------------------------


async def test_unary_maps_request_and_answer(fake):
    # Unary is the stream folded: the upstream gets a streaming request.
    fake.script(an.stream(an.message_events(["你", "好"], usage=(12, 5), cache_read=100)))
    request = chat(
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "hello"),
        ChatMessage("assistant", "hi"),
        ChatMessage("system", "Answer in Chinese."),
        ChatMessage("user", "again"),
        sampling=Sampling(max_output_tokens=64, temperature=0.2, top_p=0.8, stop_sequences=("##",), seed=3),
        user_id="u-7",
        vendor_params={"top_k": 5},
    )
    async with provider_for(fake) as provider:
        result = await provider.generate(request)
    assert result.text == "你好"
    assert result.finish is Finish.STOP
    # cached prompt tokens count as prompt tokens
    assert result.usage == Usage(prompt_tokens=112, completion_tokens=5)
    assert result.response_id == "msg_stream"
    sent = fake.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.headers["anthropic-version"]
    body = sent.json()
    assert body["model"] == "claude-fake"
    assert body["system"] == "Be brief.\n\nAnswer in Chinese."
    assert body["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "again"},
    ]
    assert body["max_tokens"] == 64
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.2, 0.8, ["##"])
    assert body["metadata"] == {"user_id": "u-7"}
    assert body["top_k"] == 5
    assert "seed" not in body  # not part of the Messages API
    assert body["stream"] is True


async def test_max_tokens_defaults_and_prompt_is_one_user_message(fake):
    fake.script(an.stream(an.message_events([" there"], stop_reason="max_tokens", usage=(3, 1))))
    async with provider_for(fake) as provider:
        result = await provider.generate(GenerateRequest(upstream_model="claude-fake", prompt="hello"))
    assert (result.text, result.finish, result.usage) == (" there", Finish.MAX_TOKENS, Usage(3, 1))
    body = fake.requests[0].json()
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS == 1024
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert "system" not in body


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", Finish.STOP), ("stop_sequence", Finish.STOP), ("max_tokens", Finish.MAX_TOKENS),
     ("refusal", Finish.CONTENT_FILTER), ("tool_use", Finish.OTHER)],
)  # fmt: skip
async def test_stop_reasons(fake, stop_reason, finish):
    fake.script(*[an.stream(an.message_events(["x"], stop_reason=stop_reason))] * 2)
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(chat()))
        assert (await provider.generate(chat())).finish is finish
    assert [c.finish for c in chunks if c.finish] == [finish]


async def test_stream_text_finish_usage(fake):
    fake.script(an.stream(an.message_events(["Hel", "lo"], usage=(25, 15))))
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(chat()))
    assert "".join(c.text for c in chunks) == "Hello"
    assert chunks[-1].finish is Finish.STOP
    assert chunks[-1].usage == Usage(25, 15)
    assert [c for c in chunks if c.usage] == [chunks[-1]]
    assert {c.response_id for c in chunks} == {"msg_stream"}
    assert fake.requests[0].json()["stream"] is True


async def test_stream_chinese_character_split_across_writes(fake):
    data = b"".join(an.message_events(["你好", "世界"]))
    fake.script(an.stream(split_inside(data, "世"), pause=0.05))
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(chat()))
    assert "".join(c.text for c in chunks) == "你好世界"


# --- failures --------------------------------------------------------------------

HTTP_FAILURES = [
    pytest.param(an.error(400, "invalid_request_error", "max_tokens: too big"), F.BAD_REQUEST,
                 C.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST", 400, id="400"),
    pytest.param(an.error(401, "authentication_error", f"invalid x-api-key {KEY}"), F.AUTHENTICATION,
                 C.INTERNAL, "UPSTREAM_AUTH_FAILED", 401, id="401"),
    pytest.param(an.error(403, "permission_error", "no access"), F.AUTHENTICATION, C.INTERNAL,
                 "UPSTREAM_AUTH_FAILED", 403, id="403"),
    pytest.param(an.error(404, "not_found_error", "model: claude-fake"), F.MODEL_NOT_FOUND, C.NOT_FOUND,
                 "UPSTREAM_MODEL_NOT_FOUND", 404, id="404"),
    pytest.param(an.error(408, "timeout_error", "Request timed out"), F.TIMEOUT, C.DEADLINE_EXCEEDED,
                 "UPSTREAM_TIMEOUT", 408, id="408"),
    pytest.param(an.error(413, "request_too_large", "Request exceeds the maximum size"), F.CONTEXT_TOO_LONG,
                 C.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED", 413, id="413"),
    pytest.param(an.error(500, "api_error", "Internal server error"), F.SERVER_ERROR, C.UNAVAILABLE,
                 "UPSTREAM_SERVER_ERROR", 500, id="500"),
    pytest.param(an.error(529, "overloaded_error", "Overloaded"), F.SERVER_ERROR, C.UNAVAILABLE,
                 "UPSTREAM_SERVER_ERROR", 529, id="529"),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "failure", "code", "reason", "status"), HTTP_FAILURES)
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_http_error_classified(fake, reply, failure, code, reason, status, streaming):
    fake.script(reply)
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(
        err, failure, code, reason, provider="anthropic", upstream_status=status,
        upstream_request_id=f"req_{status}", secret=KEY,
    )  # fmt: skip


@pytest.mark.parametrize("retry_after", ["30", "http-date"])
async def test_429_retry_after(fake, retry_after):
    header = email.utils.formatdate(time.time() + 30, usegmt=True) if retry_after == "http-date" else "30"
    fake.script(
        an.error(429, "rate_limit_error", "Number of requests exceeded", headers={"retry-after": header})
    )
    async with provider_for(fake) as provider:
        err = await failure_of(provider.generate(chat()))
    check_error(
        err, F.RATE_LIMITED, C.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", provider="anthropic",
        upstream_status=429, upstream_request_id="req_429", retry_after=30,
    )  # fmt: skip


async def test_sdk_retries_are_the_one_retry_layer(fake):
    fake.script(
        an.error(529, "overloaded_error", "Overloaded", headers={"retry-after": "0.01"}),
        an.stream(an.message_events(["ok"])),
    )
    async with provider_for(fake, max_retries=1) as provider:
        result = await asyncio.wait_for(provider.generate(chat()), 20)
    assert result.text == "ok"
    assert len(fake.requests) == 2


async def test_hung_response_times_out(fake):
    fake.script(Hang())
    async with provider_for(fake, timeout_seconds=0.3) as provider:
        err = await failure_of(provider.generate(chat()))
        await asyncio.wait_for(fake.client_gone.wait(), 5)
    check_error(err, F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", provider="anthropic")


async def test_caller_deadline_bounds_a_stalled_stream(fake):
    fake.script(an.stream(an.message_events(["first"])[:4], end="hold"))
    async with provider_for(fake, timeout_seconds=60) as provider:
        stream = provider.stream(chat(timeout=0.5))
        assert (await asyncio.wait_for(anext(stream), 5)).text == "first"
        err = await failure_of(collect(stream))
        await asyncio.wait_for(fake.client_gone.wait(), 5)
    check_error(err, F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", provider="anthropic")


async def test_connection_refused_is_unreachable():
    provider = AnthropicProvider(
        "anthropic", base_url=f"http://127.0.0.1:{closed_port()}", api_key=KEY, max_retries=0
    )
    err = await failure_of(provider.generate(chat()))
    await provider.close()
    check_error(err, F.UNREACHABLE, C.UNAVAILABLE, "UPSTREAM_UNREACHABLE", provider="anthropic", secret=KEY)


async def test_stream_cut_mid_way(fake):
    fake.script(an.stream(an.message_events(["one", "two"])[:4], end="cut"))
    got: list[str] = []
    async with provider_for(fake) as provider:
        with pytest.raises(UpstreamError) as caught:
            async for chunk in provider.stream(chat()):
                got.append(chunk.text)
    assert got == ["one"]
    check_error(
        caught.value, F.STREAM_INTERRUPTED, C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED",
        provider="anthropic", upstream_request_id="req_stream",
    )  # fmt: skip


async def test_unary_stream_cut_mid_way(fake):
    fake.script(an.stream(an.message_events(["one", "two"])[:4], end="cut"))
    async with provider_for(fake) as provider:
        err = await failure_of(provider.generate(chat()))
    check_error(
        err, F.STREAM_INTERRUPTED, C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED", provider="anthropic",
        upstream_request_id="req_stream",
    )  # fmt: skip


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_stream_ending_before_message_stop_is_interrupted(fake, streaming):
    # A complete HTTP body that simply lacks message_stop.
    fake.script(an.stream(an.message_events(["one"])[:-1]))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.STREAM_INTERRUPTED, C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED", provider="anthropic")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_malformed_event(fake, streaming):
    events = an.message_events(["ok"])
    fake.script(
        an.stream([*events[:3], b'event: content_block_delta\ndata: {"type": "content_\n\n', *events[3:]])
    )
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.MALFORMED_RESPONSE, C.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE", provider="anthropic")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_200_that_is_not_an_event_stream_is_malformed(fake, streaming):
    # A proxy's HTML page with status 200: not a stream cut short.
    fake.script(Respond(200, b"<html>proxy error</html>", content_type="text/html"))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.MALFORMED_RESPONSE, C.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE", provider="anthropic")


@pytest.mark.parametrize(
    ("type", "failure", "code", "reason"),
    [("overloaded_error", F.SERVER_ERROR, C.UNAVAILABLE, "UPSTREAM_SERVER_ERROR"),
     ("rate_limit_error", F.RATE_LIMITED, C.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED")],
)  # fmt: skip
async def test_error_event_inside_200_stream(fake, type, failure, code, reason):
    events = an.message_events(["partial"])
    fake.script(an.stream([*events[:4], an.error_event(type, "try later")]))
    got: list[str] = []
    async with provider_for(fake) as provider:
        with pytest.raises(UpstreamError) as caught:
            async for chunk in provider.stream(chat()):
                got.append(chunk.text)
    assert got == ["partial"]
    check_error(caught.value, failure, code, reason, provider="anthropic", upstream_request_id="req_stream")


async def test_unary_error_event_inside_200_stream(fake):
    fake.script(an.stream([*an.message_events(["partial"])[:4], an.error_event("overloaded_error", "later")]))
    async with provider_for(fake) as provider:
        err = await failure_of(provider.generate(chat()))
    check_error(
        err, F.SERVER_ERROR, C.UNAVAILABLE, "UPSTREAM_SERVER_ERROR", provider="anthropic",
        upstream_request_id="req_stream",
    )  # fmt: skip


async def test_unary_cancelled_mid_answer_closes_the_upstream_stream(fake):
    fake.script(an.stream(an.message_events(["first", "never"])[:4], end="hold"))
    async with provider_for(fake) as provider:
        task = asyncio.create_task(provider.generate(chat()))
        await asyncio.sleep(0.3)  # the first delta arrives; the fold waits for more
        assert fake.requests[0].json()["stream"] is True
        assert not task.done() and not fake.client_gone.is_set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(fake.client_gone.wait(), 5)


async def test_closing_the_stream_closes_the_upstream_connection(fake):
    fake.script(an.stream(an.message_events(["first", "never"])[:4], end="hold"))
    async with provider_for(fake) as provider:
        stream = provider.stream(chat())
        assert (await asyncio.wait_for(anext(stream), 5)).text == "first"
        assert not fake.client_gone.is_set()
        await stream.aclose()  # what the service does when the caller cancels
        await asyncio.wait_for(fake.client_gone.wait(), 5)


def test_ready_needs_a_key_unless_keyless():
    def make(**options) -> AnthropicProvider:
        return AnthropicProvider("anthropic", base_url="http://127.0.0.1:1", **options)

    assert make(api_key="k").ready()
    assert not make(api_key="").ready()
    assert make(api_key="", requires_key=False).ready()
    assert make(api_key="").not_ready_hint() == "set its API key"


async def test_key_is_not_taken_from_the_environment(fake, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key-must-not-be-used")
    fake.script(an.stream(an.message_events(["ok"])))
    provider = AnthropicProvider("anthropic", base_url=fake.base_url, api_key=KEY, max_retries=0)
    await provider.generate(chat())
    await provider.close()
    assert fake.requests[0].headers["x-api-key"] == KEY
