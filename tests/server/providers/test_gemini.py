"""GeminiProvider against a fake Generative Language API speaking its exact wire format."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from server.errors import UpstreamError, UpstreamFailure
from server.providers.base import ChatMessage, Finish, GenerateRequest, Sampling, Usage
from server.providers.gemini import GeminiProvider
from tests.fakes import KEY
from tests.fakes import gemini_fake as gm
from tests.fakes.checks import check_error, collect, failure_of
from tests.fakes.http import FakeServer, Hang, Respond, closed_port, split_inside

F = UpstreamFailure
C = grpc.StatusCode


def chat(*messages: ChatMessage, **fields) -> GenerateRequest:
    return GenerateRequest(
        upstream_model="gemini-fake", messages=messages or (ChatMessage("user", "hi"),), **fields
    )


@contextlib.asynccontextmanager
async def provider_for(fake: FakeServer, **options) -> AsyncIterator[GeminiProvider]:
    options = {"max_retries": 0, "timeout_seconds": 10.0, **options}
    provider = GeminiProvider("gemini", base_url=fake.base_url, api_key=KEY, **options)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.close()


# --- answers -------------------------------------------------------------------


async def test_unary_maps_request_and_answer(fake):
    # Unary is the stream folded: the upstream gets the streaming request.
    body = gm.response_body("你好", usage=(8, 4), thoughts=10)
    fake.script(gm.stream([gm.event(gm.response_body("", finish=None, usage=None)), gm.event(body)]))
    request = chat(
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "hello"),
        ChatMessage("assistant", "hi"),
        ChatMessage("user", "again"),
        sampling=Sampling(
            max_output_tokens=64, temperature=0.2, top_p=0.8, stop_sequences=("##",), seed=3,
            presence_penalty=0.1, frequency_penalty=0.2,
        ),
        vendor_params={"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]},
    )  # fmt: skip
    async with provider_for(fake) as provider:
        result = await provider.generate(request)
    assert result.text == "你好"
    assert result.finish is Finish.STOP
    assert result.usage == Usage(prompt_tokens=8, completion_tokens=14)  # thinking tokens are output
    assert result.response_id == "resp-g1"
    sent = fake.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1beta/models/gemini-fake:streamGenerateContent?alt=sse")
    assert sent.headers["x-goog-api-key"] == KEY
    body = sent.json()
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "hello"}]},
        {"role": "model", "parts": [{"text": "hi"}]},
        {"role": "user", "parts": [{"text": "again"}]},
    ]
    assert body["generationConfig"] == {
        "maxOutputTokens": 64, "temperature": 0.2, "topP": 0.8, "stopSequences": ["##"], "seed": 3,
        "presencePenalty": 0.1, "frequencyPenalty": 0.2,
    }  # fmt: skip
    assert body["safetySettings"][0]["threshold"] == "OFF"


async def test_prompt_is_one_user_turn_and_no_usage_is_none(fake):
    fake.script(gm.stream(gm.stream_events([" th", "ere"], finish="MAX_TOKENS", usage=None)))
    async with provider_for(fake) as provider:
        result = await provider.generate(GenerateRequest(upstream_model="gemini-fake", prompt="hello"))
    assert (result.text, result.finish, result.usage) == (" there", Finish.MAX_TOKENS, None)
    body = fake.requests[0].json()
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
    assert "systemInstruction" not in body and "generationConfig" not in body


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("STOP", Finish.STOP), ("MAX_TOKENS", Finish.MAX_TOKENS), ("SAFETY", Finish.CONTENT_FILTER),
     ("RECITATION", Finish.CONTENT_FILTER), ("OTHER", Finish.OTHER)],
)  # fmt: skip
async def test_finish_reasons(fake, reason, finish):
    fake.script(*[gm.stream(gm.stream_events(["x"], finish=reason))] * 2)
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(chat()))
        assert (await provider.generate(chat())).finish is finish
    assert [c.finish for c in chunks if c.finish] == [finish]


async def test_stream_text_finish_usage(fake):
    fake.script(gm.stream(gm.stream_events(["Hel", "lo"], usage=(8, 4))))
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(chat()))
    assert "".join(c.text for c in chunks) == "Hello"
    assert chunks[-1].finish is Finish.STOP
    assert chunks[-1].usage == Usage(8, 4)
    assert [c for c in chunks if c.usage] == [chunks[-1]]
    assert {c.response_id for c in chunks} == {"resp-gs"}
    assert fake.requests[0].path == "/v1beta/models/gemini-fake:streamGenerateContent?alt=sse"


async def test_stream_chinese_character_split_across_writes(fake):
    data = b"".join(gm.stream_events(["你好", "世界"]))
    fake.script(gm.stream(split_inside(data, "世"), pause=0.05))
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(chat()))
    assert "".join(c.text for c in chunks) == "你好世界"


# --- failures --------------------------------------------------------------------

HTTP_FAILURES = [
    pytest.param(gm.error(400, "INVALID_ARGUMENT", "Invalid value at 'generation_config.temperature'"),
                 F.BAD_REQUEST, C.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST", 400, id="400"),
    pytest.param(gm.error(400, "INVALID_ARGUMENT", f"API key not valid: {KEY}", reason="API_KEY_INVALID"),
                 F.AUTHENTICATION, C.INTERNAL, "UPSTREAM_AUTH_FAILED", 400, id="400-api-key-invalid"),
    pytest.param(gm.error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials"),
                 F.AUTHENTICATION, C.INTERNAL, "UPSTREAM_AUTH_FAILED", 401, id="401"),
    pytest.param(gm.error(403, "PERMISSION_DENIED", "Permission denied"), F.AUTHENTICATION, C.INTERNAL,
                 "UPSTREAM_AUTH_FAILED", 403, id="403"),
    pytest.param(gm.error(404, "NOT_FOUND", "models/gemini-fake is not found"), F.MODEL_NOT_FOUND,
                 C.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND", 404, id="404"),
    pytest.param(gm.error(408, "DEADLINE_EXCEEDED", "timeout"), F.TIMEOUT, C.DEADLINE_EXCEEDED,
                 "UPSTREAM_TIMEOUT", 408, id="408"),
    pytest.param(gm.error(413, "INVALID_ARGUMENT", "Request payload size exceeds the limit"),
                 F.CONTEXT_TOO_LONG, C.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED", 413, id="413"),
    pytest.param(gm.error(500, "INTERNAL", "An internal error has occurred"), F.SERVER_ERROR, C.UNAVAILABLE,
                 "UPSTREAM_SERVER_ERROR", 500, id="500"),
    pytest.param(gm.error(503, "UNAVAILABLE", "The model is overloaded"), F.SERVER_ERROR, C.UNAVAILABLE,
                 "UPSTREAM_SERVER_ERROR", 503, id="503"),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "failure", "code", "reason", "status"), HTTP_FAILURES)
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_http_error_classified(fake, reply, failure, code, reason, status, streaming):
    fake.script(reply)
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, failure, code, reason, provider="gemini", upstream_status=status, secret=KEY)


@pytest.mark.parametrize("source", ["retry-info", "retry-after-seconds", "retry-after-date"])
async def test_429_delay(fake, source):
    headers = {}
    if source == "retry-after-seconds":
        headers = {"retry-after": "30"}
    elif source == "retry-after-date":
        headers = {"retry-after": email.utils.formatdate(time.time() + 30, usegmt=True)}
    fake.script(
        gm.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", headers=headers,
                 retry_delay="30s" if source == "retry-info" else None)
    )  # fmt: skip
    async with provider_for(fake) as provider:
        err = await failure_of(provider.generate(chat()))
    check_error(
        err, F.RATE_LIMITED, C.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", provider="gemini",
        upstream_status=429, retry_after=30,
    )  # fmt: skip


async def test_retries_honour_retry_info_then_succeed(fake):
    fake.script(
        gm.error(429, "RESOURCE_EXHAUSTED", "Quota", retry_delay="0.05s"), gm.stream(gm.stream_events(["ok"]))
    )
    async with provider_for(fake, max_retries=1) as provider:
        result = await asyncio.wait_for(provider.generate(chat()), 10)
    assert result.text == "ok"
    assert len(fake.requests) == 2


async def test_retry_stops_at_max_retries(fake):
    fake.script(*[gm.error(503, "UNAVAILABLE", "overloaded", retry_delay="0.01s")] * 3)
    async with provider_for(fake, max_retries=2) as provider:
        err = await failure_of(provider.generate(chat()))
    assert err.failure is F.SERVER_ERROR
    assert len(fake.requests) == 3


async def test_no_retry_past_the_caller_deadline(fake):
    fake.script(gm.error(429, "RESOURCE_EXHAUSTED", "Quota", retry_delay="30s"), gm.generate("never"))
    async with provider_for(fake, max_retries=2) as provider:
        err = await failure_of(provider.generate(chat(timeout=5)))
    assert err.failure is F.RATE_LIMITED
    assert len(fake.requests) == 1


async def test_no_retry_on_client_errors(fake):
    fake.script(gm.error(400, "INVALID_ARGUMENT", "bad"), gm.generate("never"))
    async with provider_for(fake, max_retries=2) as provider:
        await failure_of(provider.generate(chat()))
    assert len(fake.requests) == 1


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_blocked_prompt_is_content_filtered(fake, streaming):
    fake.script(gm.stream([gm.event(gm.blocked("SAFETY").body)]))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.CONTENT_FILTERED, C.INVALID_ARGUMENT, "CONTENT_FILTERED", provider="gemini")


async def test_hung_response_times_out(fake):
    fake.script(Hang())
    async with provider_for(fake, timeout_seconds=0.3) as provider:
        err = await failure_of(provider.generate(chat()))
        await asyncio.wait_for(fake.client_gone.wait(), 5)
    check_error(err, F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", provider="gemini")


async def test_caller_deadline_bounds_the_call(fake):
    fake.script(Hang())
    async with provider_for(fake, timeout_seconds=60) as provider:
        started = time.monotonic()
        err = await failure_of(provider.generate(chat(timeout=0.3)))
    assert time.monotonic() - started < 5
    check_error(err, F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", provider="gemini")


async def test_caller_deadline_bounds_a_stalled_stream(fake):
    fake.script(gm.stream(gm.stream_events(["first", "second"])[:1], end="hold"))
    async with provider_for(fake, timeout_seconds=60) as provider:
        stream = provider.stream(chat(timeout=0.5))
        assert (await asyncio.wait_for(anext(stream), 5)).text == "first"
        err = await failure_of(collect(stream))
        await asyncio.wait_for(fake.client_gone.wait(), 5)
    check_error(err, F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", provider="gemini")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_connection_refused_is_unreachable(streaming):
    provider = GeminiProvider(
        "gemini", base_url=f"http://127.0.0.1:{closed_port()}", api_key=KEY, max_retries=0
    )
    call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
    err = await failure_of(call)
    await provider.close()
    check_error(err, F.UNREACHABLE, C.UNAVAILABLE, "UPSTREAM_UNREACHABLE", provider="gemini", secret=KEY)


async def test_stream_cut_mid_way(fake):
    fake.script(gm.stream(gm.stream_events(["one", "two"])[:1], end="cut"))
    got: list[str] = []
    async with provider_for(fake) as provider:
        with pytest.raises(UpstreamError) as caught:
            async for chunk in provider.stream(chat()):
                got.append(chunk.text)
    assert got == ["one"]
    check_error(
        caught.value, F.STREAM_INTERRUPTED, C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED", provider="gemini"
    )


async def test_unary_stream_cut_mid_way(fake):
    fake.script(gm.stream(gm.stream_events(["one", "two"])[:1], end="cut"))
    async with provider_for(fake) as provider:
        err = await failure_of(provider.generate(chat()))
    check_error(err, F.STREAM_INTERRUPTED, C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED", provider="gemini")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_stream_ending_without_finish_reason_is_interrupted(fake, streaming):
    fake.script(gm.stream(gm.stream_events(["one", "two"])[:1]))  # a complete body, no finishReason
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.STREAM_INTERRUPTED, C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED", provider="gemini")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_malformed_chunk(fake, streaming):
    events = gm.stream_events(["a", "b"])
    fake.script(gm.stream([events[0], b'data: {"candidates": [{"content": \r\n\r\n', events[1]]))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.MALFORMED_RESPONSE, C.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE", provider="gemini")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_200_that_is_not_an_event_stream_is_malformed(fake, streaming):
    # A proxy's HTML page with status 200: not a stream cut short.
    fake.script(Respond(200, b"<html>proxy</html>", content_type="text/html"))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.MALFORMED_RESPONSE, C.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE", provider="gemini")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_error_object_inside_200_stream(fake, streaming):
    events = gm.stream_events(["partial", "x"])
    error = gm.event({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    fake.script(gm.stream([events[0], error]))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.SERVER_ERROR, C.UNAVAILABLE, "UPSTREAM_SERVER_ERROR", provider="gemini")


async def test_closing_the_stream_closes_the_upstream_connection(fake):
    fake.script(gm.stream(gm.stream_events(["first", "never"])[:1], end="hold"))
    async with provider_for(fake) as provider:
        stream = provider.stream(chat())
        assert (await asyncio.wait_for(anext(stream), 5)).text == "first"
        assert not fake.client_gone.is_set()
        await stream.aclose()  # what the service does when the caller cancels
        await asyncio.wait_for(fake.client_gone.wait(), 5)


async def test_unary_cancelled_mid_answer_closes_the_upstream_stream(fake):
    fake.script(gm.stream(gm.stream_events(["first", "never"])[:1], end="hold"))
    async with provider_for(fake) as provider:
        task = asyncio.create_task(provider.generate(chat()))
        await asyncio.sleep(0.3)  # the first chunk arrives; the fold waits for more
        assert fake.requests[0].path.endswith(":streamGenerateContent?alt=sse")
        assert not task.done() and not fake.client_gone.is_set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(fake.client_gone.wait(), 5)


def test_ready_needs_a_key_unless_keyless():
    def make(**options) -> GeminiProvider:
        return GeminiProvider("gemini", base_url="http://127.0.0.1:1", **options)

    assert make(api_key="k").ready()
    assert not make(api_key="").ready()
    assert make(api_key="", requires_key=False).ready()
    assert make(api_key="").not_ready_hint() == "set its API key"


async def test_default_headers_and_no_key_header_when_keyless(fake):
    fake.script(gm.stream(gm.stream_events(["ok"])))
    provider = GeminiProvider(
        "gemini", base_url=fake.base_url, api_key="", requires_key=False, default_headers={"x-team": "aigc"}
    )
    await provider.generate(chat())
    await provider.close()
    assert fake.requests[0].headers["x-team"] == "aigc"
    assert "x-goog-api-key" not in fake.requests[0].headers
