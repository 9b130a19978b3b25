"""OpenAICompatProvider against a fake OpenAI server (exact wire format, every
failure on demand) and against the real llama.cpp server (xllamacpp)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from server.config import Settings
from server.errors import UpstreamError, UpstreamFailure
from server.providers.base import ChatMessage, Finish, GenerateRequest, Sampling, Usage
from server.providers.local import LocalProvider
from server.providers.openai_compat import OpenAICompatProvider
from tests.fakes import KEY
from tests.fakes import openai_fake as oa
from tests.fakes.checks import check_error, collect, failure_of
from tests.fakes.http import FakeServer, Hang, Respond, closed_port, split_inside

F = UpstreamFailure
C = grpc.StatusCode


def chat(text: str = "hi", **fields) -> GenerateRequest:
    return GenerateRequest(upstream_model="gpt-fake", messages=(ChatMessage("user", text),), **fields)


@contextlib.asynccontextmanager
async def provider_for(fake: FakeServer, **options) -> AsyncIterator[OpenAICompatProvider]:
    options = {"max_retries": 0, "timeout_seconds": 10.0, **options}
    provider = OpenAICompatProvider("openai", base_url=f"{fake.base_url}/v1", api_key=KEY, **options)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.close()


# --- answers -------------------------------------------------------------------


async def test_unary_chat_maps_request_and_answer(fake):
    # Unary is the stream folded: the upstream gets a streaming request.
    fake.script(oa.stream(oa.chat_events(["你", "好!"], usage=(11, 3), id="chatcmpl-1")))
    request = chat(
        "hello",
        sampling=Sampling(max_output_tokens=50, temperature=0.5, top_p=0.9, stop_sequences=("END",), seed=7),
        user_id="u-1",
        vendor_params={"logit_bias": {"42": -100}},
    )
    async with provider_for(fake) as provider:
        result = await provider.generate(request)
    assert result.text == "你好!"
    assert result.finish is Finish.STOP
    assert result.usage == Usage(11, 3)
    assert result.response_id == "chatcmpl-1"
    sent = fake.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = sent.json()
    assert body["model"] == "gpt-fake"
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.5
    assert body["top_p"] == 0.9
    assert body["stop"] == ["END"]
    assert body["seed"] == 7
    assert body["user"] == "u-1"
    assert body["logit_bias"] == {"42": -100}
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_unary_without_usage_returns_none(fake):
    # A server that ignores stream_options.include_usage: no usage is invented.
    fake.script(oa.stream(oa.chat_events(["o", "k"], usage=None)))
    async with provider_for(fake) as provider:
        result = await provider.generate(chat())
    assert (result.text, result.finish, result.usage) == ("ok", Finish.STOP, None)


async def test_unary_length_finish(fake):
    fake.script(oa.stream(oa.chat_events(["cut sho"], finish="length")))
    async with provider_for(fake) as provider:
        assert (await provider.generate(chat())).finish is Finish.MAX_TOKENS


async def test_completion_uses_completions_endpoint(fake):
    fake.script(oa.stream(oa.completion_events([" wor", "ld"], usage=(2, 1))))
    async with provider_for(fake) as provider:
        result = await provider.generate(GenerateRequest(upstream_model="gpt-fake", prompt="hello"))
    assert (result.text, result.finish, result.usage) == (" world", Finish.STOP, Usage(2, 1))
    assert result.response_id == "cmpl-s"
    assert fake.requests[0].path == "/v1/completions"
    assert fake.requests[0].json()["prompt"] == "hello"
    assert fake.requests[0].json()["stream"] is True


async def test_stream_chat_text_finish_usage(fake):
    fake.script(oa.stream(oa.chat_events(["Hel", "lo"], usage=(9, 2))))
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(chat()))
    assert "".join(c.text for c in chunks) == "Hello"
    assert [c.finish for c in chunks if c.finish] == [Finish.STOP]
    assert [c.usage for c in chunks if c.usage] == [Usage(9, 2)]
    assert chunks[-1].usage == Usage(9, 2)  # usage comes last, after finish
    body = fake.requests[0].json()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_stream_completion(fake):
    fake.script(oa.stream(oa.completion_events(["a", "b"], usage=(1, 2))))
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(GenerateRequest(upstream_model="gpt-fake", prompt="x")))
    assert "".join(c.text for c in chunks) == "ab"
    assert chunks[-1].usage == Usage(1, 2)
    assert fake.requests[0].path == "/v1/completions"


async def test_stream_without_usage_chunk_has_no_usage(fake):
    # Some compatible servers ignore stream_options.include_usage.
    fake.script(oa.stream(oa.chat_events(["x"], usage=None)))
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(chat()))
    assert [c.finish for c in chunks if c.finish] == [Finish.STOP]
    assert all(c.usage is None for c in chunks)


async def test_stream_chinese_character_split_across_writes(fake):
    data = b"".join(oa.chat_events(["你好", "世界"]))
    fake.script(oa.stream(split_inside(data, "世"), pause=0.05))
    async with provider_for(fake) as provider:
        chunks = await collect(provider.stream(chat()))
    assert "".join(c.text for c in chunks) == "你好世界"


# --- failures --------------------------------------------------------------------

HTTP_FAILURES = [
    pytest.param(oa.error(400, "bad temperature"), F.BAD_REQUEST, C.INVALID_ARGUMENT,
                 "UPSTREAM_INVALID_REQUEST", 400, id="400"),
    pytest.param(oa.error(400, "too long", code="context_length_exceeded"), F.CONTEXT_TOO_LONG,
                 C.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED", 400, id="400-context"),
    pytest.param(oa.error(413, "request too large"), F.CONTEXT_TOO_LONG, C.INVALID_ARGUMENT,
                 "CONTEXT_LENGTH_EXCEEDED", 413, id="413"),
    pytest.param(oa.error(400, "flagged", code="content_filter"), F.CONTENT_FILTERED, C.INVALID_ARGUMENT,
                 "CONTENT_FILTERED", 400, id="400-content-filter"),
    pytest.param(oa.error(401, f"Incorrect API key provided: {KEY}", type="invalid_request_error",
                          code="invalid_api_key"), F.AUTHENTICATION, C.INTERNAL, "UPSTREAM_AUTH_FAILED", 401,
                 id="401"),
    pytest.param(oa.error(403, "region not supported"), F.AUTHENTICATION, C.INTERNAL, "UPSTREAM_AUTH_FAILED",
                 403, id="403"),
    pytest.param(oa.error(404, "The model `gpt-fake` does not exist", code="model_not_found"),
                 F.MODEL_NOT_FOUND, C.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND", 404, id="404"),
    pytest.param(oa.error(408, "request timeout"), F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", 408,
                 id="408"),
    pytest.param(oa.error(500, "boom", type="server_error"), F.SERVER_ERROR, C.UNAVAILABLE,
                 "UPSTREAM_SERVER_ERROR", 500, id="500"),
    pytest.param(oa.error(503, "overloaded", type="server_error"), F.SERVER_ERROR, C.UNAVAILABLE,
                 "UPSTREAM_SERVER_ERROR", 503, id="503"),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "failure", "code", "reason", "status"), HTTP_FAILURES)
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_http_error_classified(fake, reply, failure, code, reason, status, streaming):
    fake.script(reply)
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(
        err, failure, code, reason, provider="openai", upstream_status=status,
        upstream_request_id=f"req-{status}", secret=KEY,
    )  # fmt: skip


async def test_429_retry_after_seconds(fake):
    fake.script(oa.error(429, "slow down", type="requests", code="rate_limit_exceeded",
                         headers={"retry-after": "30"}))  # fmt: skip
    async with provider_for(fake) as provider:
        err = await failure_of(provider.generate(chat()))
    check_error(
        err, F.RATE_LIMITED, C.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", provider="openai",
        upstream_status=429, upstream_request_id="req-429", retry_after=30,
    )  # fmt: skip


async def test_429_retry_after_http_date(fake):
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    fake.script(oa.error(429, "slow down", headers={"retry-after": when}))
    async with provider_for(fake) as provider:
        err = await failure_of(provider.generate(chat()))
    check_error(
        err, F.RATE_LIMITED, C.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", provider="openai",
        upstream_status=429, retry_after=120,
    )  # fmt: skip


async def test_sdk_retries_are_the_one_retry_layer(fake):
    fake.script(
        oa.error(500, "flaky", headers={"retry-after": "0.01"}), oa.stream(oa.chat_events(["second try"]))
    )
    async with provider_for(fake, max_retries=1) as provider:
        result = await asyncio.wait_for(provider.generate(chat()), 20)
    assert result.text == "second try"
    assert len(fake.requests) == 2


async def test_hung_response_times_out_and_drops_connection(fake):
    fake.script(Hang())
    async with provider_for(fake, timeout_seconds=0.3) as provider:
        err = await failure_of(provider.generate(chat()))
        await asyncio.wait_for(fake.client_gone.wait(), 5)
    check_error(err, F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", provider="openai")


async def test_caller_deadline_bounds_the_call(fake):
    fake.script(Hang())
    async with provider_for(fake, timeout_seconds=60) as provider:
        started = time.monotonic()
        err = await failure_of(provider.generate(chat(timeout=0.3)))
        elapsed = time.monotonic() - started
    check_error(err, F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", provider="openai")
    assert elapsed < 5


async def test_caller_deadline_bounds_a_stalled_stream(fake):
    fake.script(oa.stream(oa.chat_events(["first"])[:2], end="hold"))
    async with provider_for(fake, timeout_seconds=60) as provider:
        stream = provider.stream(chat(timeout=0.5))
        first = await asyncio.wait_for(anext(stream), 5)
        assert first.text == "first"
        err = await failure_of(collect(stream))
        await asyncio.wait_for(fake.client_gone.wait(), 5)
    check_error(err, F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", provider="openai")


async def test_connection_refused_is_unreachable():
    provider = OpenAICompatProvider(
        "openai", base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key=KEY, max_retries=0
    )
    err = await failure_of(provider.generate(chat()))
    await provider.close()
    check_error(err, F.UNREACHABLE, C.UNAVAILABLE, "UPSTREAM_UNREACHABLE", provider="openai", secret=KEY)


async def test_stream_cut_mid_way(fake):
    fake.script(oa.stream(oa.chat_events(["one", "two"])[:2], end="cut"))
    got: list[str] = []
    async with provider_for(fake) as provider:
        with pytest.raises(UpstreamError) as caught:
            async for chunk in provider.stream(chat()):
                got.append(chunk.text)
    assert got == ["one"]
    check_error(
        caught.value, F.STREAM_INTERRUPTED, C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED",
        provider="openai", upstream_request_id="req-stream",
    )  # fmt: skip


async def test_unary_stream_cut_mid_way(fake):
    fake.script(oa.stream(oa.chat_events(["one", "two"])[:2], end="cut"))
    async with provider_for(fake) as provider:
        err = await failure_of(provider.generate(chat()))
    check_error(
        err, F.STREAM_INTERRUPTED, C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED", provider="openai",
        upstream_request_id="req-stream",
    )  # fmt: skip


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_stream_ending_without_finish_is_interrupted(fake, streaming):
    # Properly terminated HTTP body, but no finish_reason and no [DONE].
    fake.script(oa.stream(oa.chat_events(["one"], finish=None, usage=None)[:-1]))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.STREAM_INTERRUPTED, C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED", provider="openai")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_malformed_chunk(fake, streaming):
    events = oa.chat_events(["ok"])
    fake.script(oa.stream([events[0], b'data: {"id": "x", "choices": [{"delta": \n\n', *events[1:]]))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.MALFORMED_RESPONSE, C.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE", provider="openai")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_200_that_is_not_an_event_stream_is_malformed(fake, streaming):
    # A proxy's HTML page with status 200: not a stream cut short.
    fake.script(Respond(200, b"<html>gateway</html>", content_type="text/html"))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(err, F.MALFORMED_RESPONSE, C.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE", provider="openai")


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_error_event_inside_200_stream(fake, streaming):
    events = oa.chat_events(["partial"])
    error = oa.event({"error": {"message": "The server had an error", "type": "server_error", "code": None}})
    fake.script(oa.stream([*events[:2], error]))
    async with provider_for(fake) as provider:
        call = collect(provider.stream(chat())) if streaming else provider.generate(chat())
        err = await failure_of(call)
    check_error(
        err, F.SERVER_ERROR, C.UNAVAILABLE, "UPSTREAM_SERVER_ERROR", provider="openai",
        upstream_request_id="req-stream",
    )  # fmt: skip


async def test_closing_the_stream_closes_the_upstream_connection(fake):
    fake.script(oa.stream(oa.chat_events(["first", "never"])[:2], end="hold"))
    async with provider_for(fake) as provider:
        stream = provider.stream(chat())
        first = await asyncio.wait_for(anext(stream), 5)
        assert first.text == "first"
        assert not fake.client_gone.is_set()
        await stream.aclose()  # what the service does when the caller cancels
        await asyncio.wait_for(fake.client_gone.wait(), 5)


async def test_cancelled_unary_call_closes_the_upstream_connection(fake):
    fake.script(Hang())
    async with provider_for(fake) as provider:
        task = asyncio.create_task(provider.generate(chat()))
        async with asyncio.timeout(5):
            while not fake.requests:  # noqa: ASYNC110 - the fake records requests in a list
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(fake.client_gone.wait(), 5)


async def test_unary_cancelled_mid_answer_closes_the_upstream_stream(fake):
    # The answer has begun (the upstream is generating) when the caller goes away.
    fake.script(oa.stream(oa.chat_events(["first", "never"])[:2], end="hold"))
    async with provider_for(fake) as provider:
        task = asyncio.create_task(provider.generate(chat()))
        await asyncio.sleep(0.3)  # the first chunk arrives; the fold waits for more
        assert fake.requests[0].json()["stream"] is True
        assert not task.done() and not fake.client_gone.is_set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(fake.client_gone.wait(), 5)


async def test_unary_caller_deadline_mid_answer_closes_the_upstream_stream(fake):
    fake.script(oa.stream(oa.chat_events(["first", "never"])[:2], end="hold"))
    async with provider_for(fake, timeout_seconds=60) as provider:
        err = await failure_of(provider.generate(chat(timeout=0.5)))
        await asyncio.wait_for(fake.client_gone.wait(), 5)
    check_error(err, F.TIMEOUT, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", provider="openai")


def test_secrets_are_the_key_and_long_header_values():
    provider = OpenAICompatProvider(
        "x", base_url="http://127.0.0.1:1/v1", api_key=KEY,
        default_headers={"x-team": "aigc", "x-api-token": "hdr-token-424242"},
    )  # fmt: skip
    assert provider.secrets == (KEY, "hdr-token-424242")


async def test_secret_header_value_never_shows_in_an_error(fake):
    token = "hdr-token-424242"
    fake.script(oa.error(403, f"token {token} is not allowed for this project"))
    async with provider_for(fake, default_headers={"x-api-token": token}) as provider:
        err = await failure_of(provider.generate(chat()))
    assert fake.requests[0].headers["x-api-token"] == token
    check_error(
        err, F.AUTHENTICATION, C.INTERNAL, "UPSTREAM_AUTH_FAILED", provider="openai", upstream_status=403,
        secret=token,
    )  # fmt: skip
    assert "[REDACTED]" in err.message


def test_ready_needs_a_key_unless_keyless():
    def make(**options) -> OpenAICompatProvider:
        return OpenAICompatProvider("x", base_url="http://127.0.0.1:1/v1", **options)

    assert make(api_key="k").ready()
    assert not make(api_key="").ready()
    assert make(api_key="", requires_key=False).ready()
    assert "API key" in make(api_key="").not_ready_hint()


async def test_keyless_upstream_gets_placeholder_key(fake):
    fake.script(oa.stream(oa.chat_events(["ok"])))
    provider = OpenAICompatProvider("ollama", base_url=f"{fake.base_url}/v1", api_key="", requires_key=False)
    await provider.generate(chat())
    await provider.close()
    assert fake.requests[0].headers["authorization"] == "Bearer unused"


async def test_default_headers_are_sent(fake):
    fake.script(oa.stream(oa.chat_events(["ok"])))
    async with provider_for(fake, default_headers={"x-team": "aigc"}) as provider:
        await provider.generate(chat())
    assert fake.requests[0].headers["x-team"] == "aigc"


# --- the real llama.cpp server -------------------------------------------------------


@pytest.fixture(scope="module")
async def llama() -> AsyncIterator[LocalProvider]:
    """llama.cpp's own OpenAI-compatible server with the SmolLM2 model, as `local` runs it."""
    local = LocalProvider(Settings.from_env({}).local)
    await asyncio.wait_for(local.start(), 120)
    try:
        yield local
    finally:
        await local.close()


def short(**fields) -> GenerateRequest:
    return chat("Say hello.", sampling=Sampling(max_output_tokens=8, temperature=0, seed=1), **fields)


async def test_llama_unary_chat(llama):
    result = await asyncio.wait_for(llama.generate(short()), 60)
    assert result.text
    assert result.finish in (Finish.STOP, Finish.MAX_TOKENS)
    assert result.usage is not None
    assert result.usage.prompt_tokens > 0
    assert 0 < result.usage.completion_tokens <= 8


async def test_llama_stream_chat_with_usage(llama):
    chunks = await asyncio.wait_for(collect(llama.stream(short())), 60)
    assert "".join(c.text for c in chunks)
    assert [c.finish for c in chunks if c.finish] in ([Finish.STOP], [Finish.MAX_TOKENS])
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1
    assert usage[0].prompt_tokens > 0
    assert 0 < usage[0].completion_tokens <= 8


async def test_llama_completion_stream(llama):
    request = GenerateRequest(upstream_model="smollm2", prompt="Once upon a time",
                              sampling=Sampling(max_output_tokens=5, temperature=0))  # fmt: skip
    chunks = await asyncio.wait_for(collect(llama.stream(request)), 60)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert [c.finish for c in chunks if c.finish] == [Finish.MAX_TOKENS]


async def test_llama_wrong_key_is_authentication(llama):
    wrong = OpenAICompatProvider(
        "llama", base_url=f"{llama.address}/v1", api_key="wrong-key-123", max_retries=0
    )
    err = await failure_of(wrong.generate(short()))
    await wrong.close()
    check_error(
        err, F.AUTHENTICATION, C.INTERNAL, "UPSTREAM_AUTH_FAILED", provider="llama", upstream_status=401,
        secret="wrong-key-123",
    )  # fmt: skip


async def test_llama_stream_close_frees_the_slot(llama):
    request = chat("Count to one hundred.", sampling=Sampling(max_output_tokens=400, temperature=0))
    stream = llama.stream(request)
    await asyncio.wait_for(anext(stream), 60)
    await stream.aclose()
    # llama.cpp stops decoding once it notices the closed connection.
    async with asyncio.timeout(10):
        while await llama.busy_slots():  # noqa: ASYNC110 - polling llama.cpp's /slots, no event to wait on
            await asyncio.sleep(0.05)
