"""Upstream timeouts per phase (server/providers/http.py `Timeouts`) and endpoint ejection
(server/providers/endpoints.py), against a fake OpenAI-protocol vendor on a real socket.

Each timeout error says which limit fired (ErrorInfo metadata `timeout`: first_token,
idle, total, deadline), so an operator can tell a slow vendor from a tight deadline.
A stream that stalls after its first chunk ends with the error in-band: never a
silent end that looks like success.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from server.errors import UpstreamError, UpstreamFailure
from server.providers.base import ProviderRequest
from server.providers.endpoints import EJECT_SECONDS
from server.providers.openai import OpenAICompatProvider
from tests.conformance.requests import chat, user
from tests.fakes import openai_fake
from tests.fakes.http import FakeServer, Hang, Stream


def provider(*fakes: FakeServer, **timeouts) -> OpenAICompatProvider:
    urls = [f"{fake.base_url}/v1" for fake in fakes]
    return OpenAICompatProvider(
        "vendor", base_url=urls[0], base_urls=urls[1:], api_key="sk-t", max_retries=0, **timeouts
    )


def request(deadline: float | None = None) -> ProviderRequest:
    r = chat(user("hi"))
    return ProviderRequest("gpt-x", chat=r, config=r.generation_config, deadline=deadline)


async def read(p: OpenAICompatProvider, r: ProviderRequest | None = None) -> tuple[list[str], UpstreamError]:
    """The text read before the stream failed, and the failure."""
    seen: list[str] = []
    with pytest.raises(UpstreamError) as caught:
        async with p.stream(r or request()) as chunks:
            async for chunk in chunks:
                seen.extend(part.text for part in chunk.parts)
    return seen, caught.value


def started(events: list[bytes]) -> list[bytes]:
    """The first events of an answer, without its finish, usage and [DONE]."""
    return events[:2]


async def test_no_first_token_in_time(fake: FakeServer):
    fake.script(Hang())
    p = provider(fake, first_token_timeout_seconds=0.3)
    began = time.monotonic()
    seen, error = await read(p)
    assert (seen, error.failure, error.metadata["timeout"]) == ([], UpstreamFailure.TIMEOUT, "first_token")
    assert "first_token_timeout_seconds" in error.message
    assert time.monotonic() - began < 5
    assert not error.retryable, "the time is spent: a fallback model, not the same call again"
    await p.close()


async def test_a_connection_that_cannot_be_opened_in_time_is_connect_and_retryable():
    """A listener whose accept queue is full drops new SYNs: the connect itself hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept queue; later SYNs go unanswered
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            p = OpenAICompatProvider(
                "vendor",
                base_url=f"http://127.0.0.1:{port}/v1",
                api_key="sk-t",
                max_retries=0,
                connect_timeout_seconds=0.3,
            )
            _, error = await read(p)
            assert (error.failure, error.metadata["timeout"]) == (UpstreamFailure.TIMEOUT, "connect")
            assert error.retryable
            await p.close()
        finally:
            for filler in fillers:
                filler.close()


async def test_a_stream_that_stalls_after_its_first_chunk_ends_with_idle(fake: FakeServer):
    fake.script(Stream(started(openai_fake.chat_events(["Hel", "lo"])), end="hold"))
    p = provider(fake, idle_timeout_seconds=0.3)
    seen, error = await read(p)
    assert "Hel" in seen
    assert (error.failure, error.metadata["timeout"]) == (UpstreamFailure.TIMEOUT, "idle")
    assert "idle_timeout_seconds" in error.message
    # The stalled connection was closed, not left open at the vendor.
    await asyncio.wait_for(fake.client_gone.wait(), 5)
    await p.close()


async def test_a_stream_that_keeps_trickling_is_cut_by_the_total(fake: FakeServer):
    pieces = [f"w{i} " for i in range(100)]
    fake.script(Stream(openai_fake.chat_events(pieces), pause=0.05))
    p = provider(fake, timeout_seconds=0.6, idle_timeout_seconds=5)
    seen, error = await read(p)
    assert 0 < len(seen) < 100
    assert (error.failure, error.metadata["timeout"]) == (UpstreamFailure.TIMEOUT, "total")
    await p.close()


@pytest.mark.parametrize("phase", ["first_token", "idle"])
async def test_the_callers_deadline_wins_over_a_longer_limit_and_says_so(fake: FakeServer, phase: str):
    if phase == "first_token":
        fake.script(Hang())
    else:
        fake.script(Stream(started(openai_fake.chat_events(["Hel"])), end="hold"))
    p = provider(fake, first_token_timeout_seconds=30, idle_timeout_seconds=30)
    deadline = asyncio.get_running_loop().time() + 0.4
    _, error = await read(p, request(deadline))
    assert (error.failure, error.metadata["timeout"]) == (UpstreamFailure.TIMEOUT, "deadline")
    assert error.message.endswith("no answer within the caller's deadline")
    assert not error.retryable
    await p.close()


# --- several endpoints ----------------------------------------------------------------------


async def test_calls_take_the_endpoints_in_turn():
    async with FakeServer() as a, FakeServer() as b:
        for fake in (a, b):
            fake.script(openai_fake.chat("one"), openai_fake.chat("two"))
        p = provider(a, b)
        for _ in range(4):
            async with p.stream(request()) as chunks:
                [c async for c in chunks]
        assert (len(a.requests), len(b.requests)) == (2, 2)
        await p.close()


async def test_a_failing_endpoint_is_left_out_and_the_others_serve():
    async with FakeServer() as bad, FakeServer() as good:
        bad.script(openai_fake.error(503, "overloaded", type="server_error"))
        good.script(*(openai_fake.chat(f"answer {i}") for i in range(4)))
        p = provider(bad, good)
        texts = []
        for _ in range(5):
            try:
                async with p.stream(request()) as chunks:
                    texts.append("".join([part.text async for c in chunks for part in c.parts]))
            except UpstreamError as error:
                texts.append(error.reason)
        # The first call to `bad` fails; for EJECT_SECONDS every call goes to `good`.
        assert texts.count("UPSTREAM_SERVER_ERROR") == 1
        assert len(bad.requests) == 1 and len(good.requests) == 4
        assert p.endpoints.all[0].ejected_until > time.monotonic() + EJECT_SECONDS - 5
        await p.close()


async def test_with_every_endpoint_out_the_one_out_longest_is_tried():
    async with FakeServer() as a, FakeServer() as b:
        a.script(openai_fake.error(500, "down", type="server_error"), openai_fake.chat("back"))
        b.script(openai_fake.error(500, "down", type="server_error"))
        p = provider(a, b)
        for _ in range(2):
            with pytest.raises(UpstreamError):
                async with p.stream(request()) as chunks:
                    [c async for c in chunks]
        async with p.stream(request()) as chunks:
            assert "".join([part.text async for c in chunks for part in c.parts]) == "back"
        await p.close()


async def test_the_callers_deadline_does_not_eject_an_endpoint():
    async with FakeServer() as a, FakeServer() as b:
        a.script(Hang())
        p = provider(a, b)
        _, error = await read(p, request(asyncio.get_running_loop().time() + 0.3))
        assert error.metadata["timeout"] == "deadline"
        assert p.endpoints.all[0].ejected_until == 0.0
        await p.close()
