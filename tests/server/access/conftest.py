"""Both quota stores behind one fixture, so every rule is checked against each.

`quotas` is parametrized: "memory" runs MemoryQuotaStore on a fake clock
(`wait` moves it), "redis" runs RedisQuotaStore against a real redis-server
(one for the session, a fresh key prefix per test; `wait` really sleeps).
Tests that kill or pause Redis take `own_redis`, a server of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from server.access.memory_quotas import MemoryQuotaStore
from server.access.quotas import QuotaStore
from server.access.redis_quotas import RedisQuotaStore
from tests.support.redis import RedisServer, running_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests sharing one Redis never share a budget."""
    return f"test:{uuid.uuid4().hex[:12]}:"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Quotas:
    kind: str
    store: QuotaStore
    wait: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
async def quotas(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Quotas]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        yield Quotas("memory", MemoryQuotaStore(clock=clock), advance)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    store = RedisQuotaStore(server.url, on_failure="closed", prefix=prefix)
    try:
        yield Quotas("redis", store, asyncio.sleep)
    finally:
        await store.close()
