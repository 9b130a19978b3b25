"""The one retry layer: a failed attempt is tried again only before any output.

`open_stream(provider, request)` enters `provider.stream(request)` and waits
for the first chunk. An UpstreamError on the way that is worth repeating
(`UpstreamError.retryable`: 429, 5xx, connection failures, a stream cut
before its first chunk) is retried up to `provider.max_retries` times, after
the vendor's Retry-After when it gave one (else exponential backoff with
jitter), never past the caller's deadline, and never when the vendor asks
for a longer wait than `MAX_RETRY_AFTER` - then the caller gets the error and
its RetryInfo at once instead of waiting in silence. Once a chunk exists,
nothing is retried: the caller may already have seen it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

from server.errors import UpstreamError
from server.providers.base import Chunk, Provider, ProviderRequest

# The longest vendor-requested wait we sit through on the caller's behalf.
MAX_RETRY_AFTER = 5.0
_BACKOFF_BASE = 0.25
_BACKOFF_MAX = 4.0

OnRetry = Callable[[UpstreamError, int, float], None]


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (0-based): exponential, capped, with +-25% jitter."""
    return min(_BACKOFF_MAX, _BACKOFF_BASE * 2**attempt) * (0.75 + random.random() / 2)


def retry_delay(error: UpstreamError, attempt: int, max_retries: int, deadline: float | None) -> float | None:
    """Seconds to wait before the next attempt, or None to give up now."""
    if attempt >= max_retries or not error.retryable:
        return None
    delay = error.retry_after_seconds
    if delay is None:
        delay = backoff(attempt)
    elif delay > MAX_RETRY_AFTER:
        return None
    if deadline is not None and asyncio.get_running_loop().time() + delay >= deadline:
        return None
    return delay


class _Resumed:
    """The stream with its already-read first chunk put back in front."""

    __slots__ = ("_first", "_rest")

    def __init__(self, first: Chunk | None, rest: AsyncIterator[Chunk]) -> None:
        self._first = first
        self._rest = rest

    def __aiter__(self) -> _Resumed:
        return self

    async def __anext__(self) -> Chunk:
        first = self._first
        if first is not None:
            self._first = None
            return first
        return await anext(self._rest)


@contextlib.asynccontextmanager
async def open_stream(
    provider: Provider, request: ProviderRequest, *, on_retry: OnRetry | None = None
) -> AsyncIterator[AsyncIterator[Chunk]]:
    """`provider.stream(request)`, retried before its first chunk (see the module docstring)."""
    attempt = 0
    while True:
        stack = contextlib.AsyncExitStack()
        try:
            chunks = await stack.enter_async_context(provider.stream(request))
            rest = aiter(chunks)
            first = await anext(rest, None)
        except UpstreamError as error:
            await stack.aclose()
            delay = retry_delay(error, attempt, provider.max_retries, request.deadline)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(error, attempt + 1, delay)
            await asyncio.sleep(delay)
            attempt += 1
            continue
        except BaseException:
            await stack.aclose()
            raise
        break
    async with stack:
        yield _Resumed(first, rest)


__all__ = ["MAX_RETRY_AFTER", "backoff", "open_stream", "retry_delay"]
