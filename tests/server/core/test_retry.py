"""The one retry layer: only before the first chunk, bounded by Retry-After and the deadline."""

from __future__ import annotations

import asyncio

import pytest

from server.core import retry
from server.errors import UpstreamError, UpstreamFailure
from server.providers.base import ProviderRequest
from tests.fakes.scripted import OnRead, ScriptedProvider, finish, text


def failure(
    kind: UpstreamFailure, *, retry_after: float | None = None, status: int | None = None
) -> UpstreamError:
    return UpstreamError(kind, "boom", provider="p", retry_after_seconds=retry_after, upstream_status=status)


async def drain(provider: ScriptedProvider, request: ProviderRequest | None = None, on_retry=None) -> list:
    async with retry.open_stream(provider, request or ProviderRequest("m"), on_retry=on_retry) as chunks:
        return [chunk async for chunk in chunks]


async def test_retries_a_busy_vendor_then_streams():
    retries = []
    provider = ScriptedProvider(
        [failure(UpstreamFailure.RATE_LIMITED, retry_after=0.01)],
        [failure(UpstreamFailure.SERVER_ERROR)],
        [text("ok"), finish()],
        max_retries=2,
    )
    chunks = await drain(provider, on_retry=lambda e, n, d: retries.append((e.reason, n)))
    assert [c.parts[0].text for c in chunks if c.parts] == ["ok"]
    assert retries == [("UPSTREAM_RATE_LIMITED", 1), ("UPSTREAM_SERVER_ERROR", 2)]
    assert provider.closed == 3, "every failed attempt's scope was closed"


async def test_a_stream_that_fails_before_its_first_chunk_is_retried_too():
    provider = ScriptedProvider(
        [OnRead(failure(UpstreamFailure.STREAM_INTERRUPTED))], [text("ok"), finish()], max_retries=1
    )
    assert len(await drain(provider)) == 2
    assert provider.closed == 2


async def test_never_after_the_first_chunk():
    provider = ScriptedProvider(
        [text("partial"), failure(UpstreamFailure.STREAM_INTERRUPTED)], [text("x")], max_retries=3
    )
    with pytest.raises(UpstreamError):
        await drain(provider)
    assert len(provider.requests) == 1


@pytest.mark.parametrize(
    "error",
    [
        failure(UpstreamFailure.BAD_REQUEST, status=400),
        failure(UpstreamFailure.AUTHENTICATION, status=401),
        failure(UpstreamFailure.TIMEOUT),
        failure(UpstreamFailure.RATE_LIMITED, retry_after=retry.MAX_RETRY_AFTER + 1),
    ],
    ids=["400", "401", "our-deadline", "long-retry-after"],
)
async def test_what_is_not_retried(error):
    provider = ScriptedProvider([error], [text("never")], max_retries=3)
    with pytest.raises(UpstreamError) as caught:
        await drain(provider)
    assert caught.value is error
    assert len(provider.requests) == 1


async def test_a_408_from_the_vendor_is_retried():
    provider = ScriptedProvider(
        [failure(UpstreamFailure.TIMEOUT, status=408)], [text("ok"), finish()], max_retries=1
    )
    assert len(await drain(provider)) == 2


async def test_no_retry_that_would_end_past_the_deadline():
    deadline = asyncio.get_running_loop().time() + 0.5
    provider = ScriptedProvider(
        [failure(UpstreamFailure.RATE_LIMITED, retry_after=2)], [text("x")], max_retries=3
    )
    with pytest.raises(UpstreamError):
        await drain(provider, ProviderRequest("m", deadline=deadline))
    assert len(provider.requests) == 1


def test_backoff_grows_and_is_capped():
    assert 0.18 <= retry.backoff(0) <= 0.32
    assert 0.37 <= retry.backoff(1) <= 0.63
    assert retry.backoff(20) <= 5.0
