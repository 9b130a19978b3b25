"""The quota rules of server/access/quotas.py, against both stores (see conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis
from google.rpc import code_pb2, error_details_pb2

from server.access.memory_quotas import STREAM_RETRY_SECONDS
from server.access.quotas import QuotaExceeded, QuotaLimits, QuotaStoreUnavailable
from server.access.redis_quotas import RedisQuotaStore, _Health
from tests.server.access.conftest import Quotas
from tests.support.redis import RedisServer

KEY = "team-a"
LOGGER = "server.access.redis_quotas"


async def refused(quotas: Quotas, limits: QuotaLimits, **kwargs) -> QuotaExceeded:
    kwargs.setdefault("reserve_tokens", 0)
    kwargs.setdefault("stream", False)
    with pytest.raises(QuotaExceeded) as caught:
        await quotas.store.admit(KEY, limits, **kwargs)
    return caught.value


def retry_delay(error: QuotaExceeded) -> float:
    """The RetryInfo a caller really receives, read back from the google.rpc.Status."""
    status = error.to_status()
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and info.reason == "RATE_LIMITED"
    assert any(detail.Unpack(retry) for detail in status.details[1:])
    return retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9


# --- rates -----------------------------------------------------------------------


# 7: 60/7 is no exact float, and the 7th request must still pass.
@pytest.mark.parametrize("n", [5, 7])
async def test_n_requests_per_minute_then_refused_with_retry_info(quotas: Quotas, n: int) -> None:
    limits = QuotaLimits(requests_per_minute=n)
    for _ in range(n):
        await quotas.store.admit(KEY, limits, reserve_tokens=0, stream=False)
    error = await refused(quotas, limits)
    assert error.metadata["limit"] == "requests_per_minute"
    assert error.metadata["key_name"] == KEY
    assert retry_delay(error) == pytest.approx(60 / n, abs=0.3)


async def test_requests_refill_continuously(quotas: Quotas) -> None:
    # 120/min: one comes back every 0.5 s (real time for Redis, the fake clock for memory).
    limits = QuotaLimits(requests_per_minute=120)
    for _ in range(120):
        await quotas.store.admit(KEY, limits, reserve_tokens=0, stream=False)
    assert retry_delay(await refused(quotas, limits)) == pytest.approx(0.5, abs=0.2)
    await quotas.wait(0.6)
    await quotas.store.admit(KEY, limits, reserve_tokens=0, stream=False)
    await refused(quotas, limits)


async def test_other_keys_have_their_own_budget(quotas: Quotas) -> None:
    limits = QuotaLimits(requests_per_minute=1)
    await quotas.store.admit(KEY, limits, reserve_tokens=0, stream=False)
    await refused(quotas, limits)
    await quotas.store.admit("team-b", limits, reserve_tokens=0, stream=False)


# --- tokens ----------------------------------------------------------------------


async def test_tokens_are_reserved_up_front(quotas: Quotas) -> None:
    limits = QuotaLimits(tokens_per_minute=1000)
    first = await quotas.store.admit(KEY, limits, reserve_tokens=600, stream=False)
    error = await refused(quotas, limits, reserve_tokens=600)
    assert error.metadata["limit"] == "tokens_per_minute"
    # 200 tokens over, at 1000 a minute.
    assert retry_delay(error) == pytest.approx(200 * 60 / 1000, abs=0.3)
    await first.release(None)  # no usage reported: the reservation stands
    await refused(quotas, limits, reserve_tokens=600)


async def test_release_refunds_unused_tokens(quotas: Quotas) -> None:
    limits = QuotaLimits(tokens_per_minute=1000)
    first = await quotas.store.admit(KEY, limits, reserve_tokens=600, stream=False)
    await first.release(100)  # 500 back
    await quotas.store.admit(KEY, limits, reserve_tokens=900, stream=False)  # 100 + 900
    await refused(quotas, limits, reserve_tokens=20)


async def test_refund_never_banks_more_than_a_full_budget(quotas: Quotas) -> None:
    limits = QuotaLimits(tokens_per_minute=1000)
    first = await quotas.store.admit(KEY, limits, reserve_tokens=500, stream=False)
    await first.release(0)
    await quotas.store.admit(KEY, limits, reserve_tokens=1000, stream=False)
    await refused(quotas, limits, reserve_tokens=10)


async def test_release_charges_usage_beyond_the_reservation(quotas: Quotas) -> None:
    limits = QuotaLimits(tokens_per_minute=1000)
    first = await quotas.store.admit(KEY, limits, reserve_tokens=500, stream=False)
    await first.release(1500)  # 1000 more than reserved: the key is 500 tokens in debt
    error = await refused(quotas, limits, reserve_tokens=0)
    assert error.metadata["limit"] == "tokens_per_minute"
    assert retry_delay(error) == pytest.approx(500 * 60 / 1000, abs=0.3)


async def test_release_twice_counts_once(quotas: Quotas) -> None:
    limits = QuotaLimits(tokens_per_minute=1000, max_concurrent_streams=1)
    first = await quotas.store.admit(KEY, limits, reserve_tokens=600, stream=True)
    await first.release(100)
    await first.release(0)  # ignored: no second refund
    await quotas.store.admit(KEY, limits, reserve_tokens=800, stream=True)
    await refused(quotas, limits, reserve_tokens=200)
    # ... and the slot was freed once, not twice: the second stream holds it.
    assert (await refused(quotas, limits, stream=True)).metadata["limit"] == "max_concurrent_streams"


async def test_a_reservation_over_a_minutes_budget_is_cut_to_it(quotas: Quotas) -> None:
    # Refusing it would tell the caller to retry after a time that never comes.
    limits = QuotaLimits(tokens_per_minute=100)
    admission = await quotas.store.admit(KEY, limits, reserve_tokens=5000, stream=False)
    await refused(quotas, limits, reserve_tokens=1)
    await admission.release(50)
    await quotas.store.admit(KEY, limits, reserve_tokens=50, stream=False)


# --- concurrency -----------------------------------------------------------------


async def test_concurrent_streams_capped_and_release_frees_a_slot(quotas: Quotas) -> None:
    limits = QuotaLimits(max_concurrent_streams=2)
    first = await quotas.store.admit(KEY, limits, reserve_tokens=0, stream=True)
    await quotas.store.admit(KEY, limits, reserve_tokens=0, stream=True)
    error = await refused(quotas, limits, stream=True)
    assert error.metadata["limit"] == "max_concurrent_streams"
    assert 0 < retry_delay(error) <= STREAM_RETRY_SECONDS
    await quotas.store.admit(KEY, limits, reserve_tokens=0, stream=False)  # unary calls hold no slot
    await first.release(None)
    await quotas.store.admit(KEY, limits, reserve_tokens=0, stream=True)
    await refused(quotas, limits, stream=True)


# --- all or nothing --------------------------------------------------------------


async def test_a_request_refused_for_tokens_takes_no_request(quotas: Quotas) -> None:
    limits = QuotaLimits(requests_per_minute=2, tokens_per_minute=1000)
    await quotas.store.admit(KEY, limits, reserve_tokens=800, stream=False)
    assert (await refused(quotas, limits, reserve_tokens=800)).metadata["limit"] == "tokens_per_minute"
    await quotas.store.admit(KEY, limits, reserve_tokens=100, stream=False)  # request 2 of 2
    assert (await refused(quotas, limits)).metadata["limit"] == "requests_per_minute"


async def test_a_stream_refused_for_its_slot_takes_no_request_and_no_tokens(quotas: Quotas) -> None:
    limits = QuotaLimits(requests_per_minute=2, tokens_per_minute=1000, max_concurrent_streams=1)
    await quotas.store.admit(KEY, limits, reserve_tokens=500, stream=True)
    error = await refused(quotas, limits, reserve_tokens=500, stream=True)
    assert error.metadata["limit"] == "max_concurrent_streams"
    await quotas.store.admit(KEY, limits, reserve_tokens=500, stream=False)  # request 2, tokens 1000
    assert (await refused(quotas, limits)).metadata["limit"] == "requests_per_minute"


async def test_the_first_limit_that_is_over_is_named(quotas: Quotas) -> None:
    limits = QuotaLimits(requests_per_minute=1, tokens_per_minute=10, max_concurrent_streams=1)
    await quotas.store.admit(KEY, limits, reserve_tokens=10, stream=True)
    error = await refused(quotas, limits, reserve_tokens=10, stream=True)
    assert error.metadata["limit"] == "requests_per_minute"


# --- Redis only: replicas, TTLs, atomicity -----------------------------------------


async def test_two_replicas_share_one_budget(redis_server: RedisServer, prefix: str) -> None:
    replicas = [RedisQuotaStore(redis_server.url, prefix=prefix) for _ in range(2)]
    limits = QuotaLimits(requests_per_minute=4, max_concurrent_streams=1)
    try:
        first = await replicas[0].admit(KEY, limits, reserve_tokens=0, stream=True)
        for i in range(3):  # requests 2..4, alternating replicas
            await replicas[(i + 1) % 2].admit(KEY, limits, reserve_tokens=0, stream=False)
        for replica in replicas:
            with pytest.raises(QuotaExceeded) as caught:
                await replica.admit(KEY, limits, reserve_tokens=0, stream=False)
            assert caught.value.metadata["limit"] == "requests_per_minute"
            assert retry_delay(caught.value) == pytest.approx(60 / 4, abs=0.3)
        # The stream slot taken through replica 0 is the key's only one on replica 1 too.
        streams_only = QuotaLimits(max_concurrent_streams=1)
        with pytest.raises(QuotaExceeded):
            await replicas[1].admit(KEY, streams_only, reserve_tokens=0, stream=True)
        await first.release(None)
        await replicas[1].admit(KEY, streams_only, reserve_tokens=0, stream=True)
    finally:
        for replica in replicas:
            await replica.close()


async def test_concurrent_admits_on_two_replicas_never_overshoot(
    redis_server: RedisServer, prefix: str
) -> None:
    replicas = [RedisQuotaStore(redis_server.url, prefix=prefix) for _ in range(2)]
    limits = QuotaLimits(requests_per_minute=10, tokens_per_minute=10_000)

    async def one(i: int) -> bool:
        try:
            await replicas[i % 2].admit(KEY, limits, reserve_tokens=100, stream=False)
            return True
        except QuotaExceeded:
            return False

    try:
        results = await asyncio.gather(*(one(i) for i in range(40)))
        assert sum(results) == 10
    finally:
        for replica in replicas:
            await replica.close()


async def test_keys_carry_ttls_and_idle_keys_vanish(redis_server: RedisServer, prefix: str) -> None:
    store = RedisQuotaStore(redis_server.url, prefix=prefix)
    client = aioredis.Redis.from_url(redis_server.url)
    limits = QuotaLimits(requests_per_minute=120, tokens_per_minute=60_000, max_concurrent_streams=2)
    try:
        admission = await store.admit(KEY, limits, reserve_tokens=500, stream=True)
        keys = sorted(k.decode() for k in await client.keys(f"{prefix}*"))
        assert keys == [f"{prefix}{{{KEY}}}:{name}" for name in ("requests", "streams", "tokens")]
        for key in keys:
            assert 0 < await client.pttl(key) <= 600_000
        await admission.release(500)
        assert not await client.exists(f"{prefix}{{{KEY}}}:streams")
        await asyncio.sleep(0.7)  # one request at 120/min: full again after 0.5 s, 500 tokens too
        assert await client.keys(f"{prefix}*") == []
    finally:
        await client.aclose()
        await store.close()


async def test_a_dead_replicas_lease_expires(redis_server: RedisServer, prefix: str) -> None:
    survivor = RedisQuotaStore(redis_server.url, prefix=prefix)
    dying = RedisQuotaStore(redis_server.url, prefix=prefix, lease_seconds=0.5)
    limits = QuotaLimits(max_concurrent_streams=2)
    try:
        await survivor.admit(KEY, limits, reserve_tokens=0, stream=True)  # a long stream, still running
        await dying.admit(KEY, limits, reserve_tokens=0, stream=True)
        await dying.close()  # gone without releasing, as a killed replica would be
        with pytest.raises(QuotaExceeded) as caught:
            await survivor.admit(KEY, limits, reserve_tokens=0, stream=True)
        assert retry_delay(caught.value) <= 0.5  # the lease ends sooner than STREAM_RETRY_SECONDS
        await asyncio.sleep(0.6)
        await survivor.admit(KEY, limits, reserve_tokens=0, stream=True)
        # The short lease did not shorten the set's TTL: the survivor's first lease still counts.
        with pytest.raises(QuotaExceeded):
            await survivor.admit(KEY, limits, reserve_tokens=0, stream=True)
    finally:
        await survivor.close()


async def test_a_living_holders_lease_is_renewed_past_its_lifetime(
    redis_server: RedisServer, prefix: str
) -> None:
    store = RedisQuotaStore(redis_server.url, prefix=prefix, lease_seconds=2, renew_seconds=0.2)
    limits = QuotaLimits(max_concurrent_streams=1)
    try:
        admission = await store.admit(KEY, limits, reserve_tokens=0, stream=True)
        await asyncio.sleep(4.5)  # over two lifetimes: only the renewals keep it
        with pytest.raises(QuotaExceeded) as caught:
            await store.admit(KEY, limits, reserve_tokens=0, stream=True)
        # Its holder is alive (renewing): a call may end any moment.
        assert retry_delay(caught.value) == 1.0
        await admission.release(None)
        await store.admit(KEY, limits, reserve_tokens=0, stream=True)
    finally:
        await store.close()


async def test_unlimited_keys_never_ask_redis(own_redis: RedisServer) -> None:
    store = RedisQuotaStore(own_redis.url, on_failure="closed")
    try:
        own_redis.kill()
        admission = await store.admit(KEY, QuotaLimits(), reserve_tokens=10_000, stream=True)
        await admission.release(20_000)
    finally:
        await store.close()


# --- Redis failures ------------------------------------------------------------------


async def timed_admit(store: RedisQuotaStore, limits: QuotaLimits, *, stream: bool = False):
    started = time.monotonic()
    try:
        return await store.admit(KEY, limits, reserve_tokens=100, stream=stream)
    finally:
        assert time.monotonic() - started < 1.0, "a quota check must never hang"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


async def wait_until_quotas_apply(store: RedisQuotaStore, limits: QuotaLimits) -> None:
    """After a restart: poll until the store answers (it skips Redis for recheck_seconds after a failure)."""
    deadline = time.monotonic() + 10
    while not store.reachable:
        assert time.monotonic() < deadline, "the quota store never came back"
        await asyncio.sleep(0.1)
        try:
            await store.admit("probe", limits, reserve_tokens=0, stream=False)
        except QuotaStoreUnavailable:
            pass


async def test_redis_killed_fail_open_lets_requests_through_and_warns_once(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = RedisQuotaStore(own_redis.url, on_failure="open", recheck_seconds=0.2)
    limits = QuotaLimits(requests_per_minute=2, tokens_per_minute=1000, max_concurrent_streams=1)
    try:
        await timed_admit(store, limits, stream=True)
        held = await timed_admit(store, limits)
        with pytest.raises(QuotaExceeded):
            await timed_admit(store, limits)

        own_redis.kill()
        for _ in range(20):  # far over every limit: all let through, none slow
            admission = await timed_admit(store, limits, stream=True)
            await admission.release(5000)  # nothing to give back: a no-op, never an error
            await asyncio.sleep(0.02)  # spans several recheck periods
        await held.release(100)  # admitted before the outage: best effort, logged, not raised
        assert len(warnings_of(caplog)) == 1, warnings_of(caplog)
        assert "requests go through without quotas" in warnings_of(caplog)[0]

        own_redis.start()  # empty: a fresh budget
        await wait_until_quotas_apply(store, limits)
        assert any("answers again" in r.getMessage() for r in caplog.records if r.name == LOGGER)
        await timed_admit(store, limits)
        await timed_admit(store, limits)
        with pytest.raises(QuotaExceeded):
            await timed_admit(store, limits)
        assert len(warnings_of(caplog)) == 1
    finally:
        await store.close()


async def test_redis_killed_fail_closed_refuses_fast(own_redis: RedisServer) -> None:
    store = RedisQuotaStore(own_redis.url, on_failure="closed", recheck_seconds=0.2)
    limits = QuotaLimits(requests_per_minute=1)
    try:
        await timed_admit(store, limits)
        own_redis.kill()
        for _ in range(10):
            with pytest.raises(QuotaStoreUnavailable) as caught:
                await timed_admit(store, limits)
            assert caught.value.code == code_pb2.UNAVAILABLE
            assert caught.value.reason == "QUOTA_STORE_UNAVAILABLE"
            await asyncio.sleep(0.05)

        own_redis.start()
        await wait_until_quotas_apply(store, limits)
        await timed_admit(store, limits)
        with pytest.raises(QuotaExceeded):
            await timed_admit(store, limits)
    finally:
        await store.close()


@pytest.mark.parametrize("on_failure", ["open", "closed"])
async def test_redis_that_hangs_is_given_up_on_after_timeout(own_redis: RedisServer, on_failure: str) -> None:
    store = RedisQuotaStore(own_redis.url, on_failure=on_failure, timeout=0.25, recheck_seconds=0.2)
    limits = QuotaLimits(requests_per_minute=100, max_concurrent_streams=1)
    try:
        held = await timed_admit(store, limits, stream=True)
        own_redis.pause()  # connections still open and accepted; no answer ever comes
        for _ in range(4):
            started = time.monotonic()
            if on_failure == "open":
                await timed_admit(store, limits, stream=True)
            else:
                with pytest.raises(QuotaStoreUnavailable):
                    await timed_admit(store, limits, stream=True)
            # The 0.25 s timeout plus room for a busy machine; a hang is forever.
            assert time.monotonic() - started < 0.25 + 0.5
            await asyncio.sleep(0.1)
        started = time.monotonic()
        await held.release(None)  # bounded as well, and silent
        assert time.monotonic() - started < 0.25 + 0.5
        own_redis.resume()
        await wait_until_quotas_apply(store, QuotaLimits(requests_per_minute=100))
    finally:
        own_redis.resume()
        await store.close()


async def test_a_lease_written_after_a_timeout_is_dropped_at_release(own_redis: RedisServer) -> None:
    # The ambiguous failure: the admit timed out, yet Redis ran it once it woke up.
    store = RedisQuotaStore(own_redis.url, on_failure="open", timeout=0.25, recheck_seconds=0.1)
    limits = QuotaLimits(max_concurrent_streams=1)
    try:
        await store.admit("probe", QuotaLimits(requests_per_minute=100), reserve_tokens=0, stream=False)
        own_redis.pause()
        unchecked = await timed_admit(store, limits, stream=True)
        own_redis.resume()
        await wait_until_quotas_apply(store, QuotaLimits(requests_per_minute=100))
        with pytest.raises(QuotaExceeded):  # the lease the late script took
            await timed_admit(store, limits, stream=True)
        await unchecked.release(None)
        await timed_admit(store, limits, stream=True)
    finally:
        own_redis.resume()
        await store.close()


async def test_a_long_outage_warns_again_now_and_then(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Health, "REPEAT_SECONDS", 0.3)
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = RedisQuotaStore(own_redis.url, on_failure="open", recheck_seconds=0.05)
    try:
        own_redis.kill()
        for _ in range(10):
            await timed_admit(store, QuotaLimits(requests_per_minute=1))
            await asyncio.sleep(0.05)
        messages = warnings_of(caplog)
        assert 2 <= len(messages) <= 3, messages
        assert "still;" in messages[1] and "calls since the last warning" in messages[1]
    finally:
        await store.close()
