"""Quotas in Redis, one budget for every replica.

Per key (the `{name}` is a Redis Cluster hash tag: a key's three entries
live on one shard, as a script that touches them together needs):

    aigc:quota:{name}:requests   GCRA TAT of requests_per_minute, ms, a string
    aigc:quota:{name}:tokens     GCRA TAT of tokens_per_minute, ms, a string
    aigc:quota:{name}:streams    ZSET of stream lease ids scored by expiry, ms

The arithmetic is MemoryQuotaStore's (see its docstring), written in Lua:
admit and release are each ONE script, so checking the three limits and
taking all or nothing is atomic across replicas, and the script reads Redis's
clock (TIME), so replicas' clocks never disagree. Needs Redis >= 5 (scripts
that write after TIME). Every entry carries a TTL: a TAT key lives until its
budget is full again, a stream set until its newest lease expires - an idle
key leaves nothing behind.

Leases: each store renews the leases it holds every `renew_seconds` (one
small script per key, from a background task), so a lease ends
`lease_seconds` after its replica died (kill -9) or lost Redis, and the next
admit of its key drops it. A refusal for the concurrency cap says, in
RetryInfo, STREAM_RETRY_SECONDS while every holder is alive (a call may end
any moment), and the time left on a lease that missed its renewals (its
replica is gone: that is when its slot frees) - never a wait that is not
true.

Failures - connection refused, no answer within `timeout`, any RedisError:
- on_failure="open": the request goes through without quotas; its release
  gives nothing back. One WARNING when the store goes away, one a minute while it
  stays away (with the count of calls let through), INFO when it is back.
- on_failure="closed": QuotaStoreUnavailable (UNAVAILABLE).
- Either way, for `recheck_seconds` after a failure nobody waits for Redis
  again: calls follow on_failure at once; the first call after that asks
  Redis again (a hanging Redis costs one `timeout` per period, not one per call).
  Socket and connect timeouts are `timeout`, redis-py retries are off, and
  the whole call is bounded by `timeout` too: never a hang.
- A timeout is ambiguous: the script may have run. Its request then counts
  (harmless) and its lease, never renewed, expires (LEASE_SECONDS); with
  on_failure="open" the release of such an admission drops the lease if the
  store answers again by then.
- release never raises: a failure is logged (rate-limited, as above) and the
  lease expires on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.access.memory_quotas import PERIOD_SECONDS, SLACK_SECONDS, STREAM_RETRY_SECONDS, reservation
from server.access.quotas import (
    LEASE_SECONDS,
    RENEW_SECONDS,
    Admission,
    QuotaExceeded,
    QuotaLimits,
    QuotaStore,
    QuotaStoreUnavailable,
)

log = logging.getLogger(__name__)

# What a store failure looks like: redis-py's errors (ConnectionError and
# TimeoutError among them), the socket's, and our own bound on the call.
_FAILURES = (RedisError, OSError, TimeoutError)

# A limit passed as -1 is "no limit". Returns {0, "0"} when admitted, else
# {which limit: 1 requests, 2 tokens, 3 streams; ms to wait, a string}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local period = tonumber(ARGV[7])
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_streams, lease, lease_ms = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local slack = tonumber(ARGV[9])

-- A TAT is kept until its budget is full again (after that it means nothing),
-- at full precision: a rounded TAT would drift by a rounding per request.
local function put(key, tat)
  redis.call('SET', key, string.format('%.17g', tat), 'PX', math.max(1, math.ceil(tat - now)))
end

local function gcra(key, limit, units)
  if limit == 0 then return nil, period end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + units * period / limit
  return new_tat, new_tat - period - now
end

local request_tat, token_tat, wait
if rpm >= 0 then
  request_tat, wait = gcra(KEYS[1], rpm, 1)
  if wait > slack then return {1, string.format('%.3f', wait)} end
end
if tpm >= 0 then
  token_tat, wait = gcra(KEYS[2], tpm, cost)
  if wait > slack then return {2, string.format('%.3f', wait)} end
end
if max_streams >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= max_streams then
    wait = tonumber(ARGV[8])
    -- The lease that ends first: a living holder renews it before it has less
    -- than ARGV[10] ms left; one with less missed its renewals (its replica is
    -- gone), and its slot frees when it expires.
    local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    if first[2] then
      local left = tonumber(first[2]) - now
      if left < wait or left < tonumber(ARGV[10]) then wait = left end
    end
    return {3, string.format('%.3f', wait)}
  end
end

-- Every limit passed: take all of it.
if request_tat then put(KEYS[1], request_tat) end
if token_tat and cost > 0 then put(KEYS[2], token_tat) end
if max_streams >= 0 then
  redis.call('ZADD', KEYS[3], now + lease_ms, lease)
  -- Only ever extended: another replica's leases may be longer than this one's.
  if redis.call('PTTL', KEYS[3]) < lease_ms then redis.call('PEXPIRE', KEYS[3], math.ceil(lease_ms)) end
end
return {0, '0'}
"""

# Frees the lease (if any) and moves the token TAT by ARGV[2] tokens: a refund
# when negative (never past a full budget), an extra charge when positive.
_RELEASE = """
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
local tpm, extra = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 and extra ~= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  tat = tat + extra * tonumber(ARGV[4]) / tpm
  if tat > now then
    redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.max(1, math.ceil(tat - now)))
  else
    redis.call('DEL', KEYS[1])
  end
end
return 0
"""

# Moves the leases in ARGV[2..] of one key's set to expire ARGV[1] ms from now;
# a lease no longer in the set (released, or expired) is not brought back.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local lease_ms = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + lease_ms, ARGV[i]) end
if redis.call('PTTL', KEYS[1]) < lease_ms then redis.call('PEXPIRE', KEYS[1], math.ceil(lease_ms)) end
return 0
"""

_LIMIT_NAMES = {1: "requests_per_minute", 2: "tokens_per_minute", 3: "max_concurrent_streams"}


class RedisQuotaStore(QuotaStore):
    """Quotas shared by every replica that points at the same Redis (see the module docstring).

    url: anything redis-py's `from_url` takes (redis://, rediss://, unix://).
    timeout: seconds for connecting and for each whole call.
    prefix: of every key, so one Redis can serve several deployments.
    lease_seconds: how long a lease lives past its last renewal (tests shorten it).
    renew_seconds: how often this store renews the leases it holds (below lease_seconds / 2).
    recheck_seconds: after a failure, how long calls do not ask Redis at all.
    """

    def __init__(
        self,
        url: str,
        *,
        on_failure: Literal["open", "closed"] = "open",
        timeout: float = 0.25,
        prefix: str = "aigc:quota:",
        lease_seconds: float = LEASE_SECONDS,
        renew_seconds: float | None = None,
        recheck_seconds: float = 1.0,
    ) -> None:
        if on_failure not in ("open", "closed"):
            raise ValueError(f"on_failure must be 'open' or 'closed', not {on_failure!r}")
        if renew_seconds is None:
            renew_seconds = min(RENEW_SECONDS, lease_seconds / 5)
        if (
            timeout <= 0
            or lease_seconds <= 0
            or recheck_seconds < 0
            or not 0 < renew_seconds < lease_seconds / 2
        ):
            raise ValueError(
                "timeout and lease_seconds must be > 0, 0 < renew_seconds < lease_seconds / 2, "
                "recheck_seconds >= 0"
            )
        self._on_failure = on_failure
        self._timeout = timeout
        self._prefix = prefix
        self._lease_ms = lease_seconds * 1000
        self._renew_seconds = renew_seconds
        # A lease with less than this left missed two renewals: its holder is gone.
        self._stale_ms = (lease_seconds - 2.5 * renew_seconds) * 1000
        # The leases this store holds, per stream set, renewed by _renew_forever.
        self._held: dict[str, set[str]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._recheck_seconds = recheck_seconds
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # A retry after a timeout would wait past `timeout`: none (the next call is
            # the retry). A pooled connection that Redis closed (it restarted) fails at
            # once with ConnectionError: one immediate retry on a fresh connection, or
            # the call would fail open without its lease although Redis is back.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis_exceptions.ConnectionError,)),
        )
        self._admit_script = self._client.register_script(_ADMIT)
        self._release_script = self._client.register_script(_RELEASE)
        self._renew_script = self._client.register_script(_RENEW)
        self._health = _Health(_where(self._client), on_failure)
        self._skip_until = 0.0

    def _keys(self, key_name: str) -> tuple[str, str, str]:
        base = f"{self._prefix}{{{key_name}}}:"
        return base + "requests", base + "tokens", base + "streams"

    async def admit(
        self, key_name: str, limits: QuotaLimits, *, reserve_tokens: int, stream: bool
    ) -> Admission:
        if limits.unlimited:
            return _NOTHING_HELD
        reserved = reservation(limits, reserve_tokens)
        lease = uuid.uuid4().hex if stream and limits.max_concurrent_streams is not None else ""
        keys = self._keys(key_name)
        args = (
            _or_minus_one(limits.requests_per_minute),
            _or_minus_one(limits.tokens_per_minute),
            reserved,
            _or_minus_one(limits.max_concurrent_streams) if lease else -1,
            lease,
            self._lease_ms,
            PERIOD_SECONDS * 1000,
            STREAM_RETRY_SECONDS * 1000,
            SLACK_SECONDS * 1000,
            self._stale_ms,
        )
        try:
            which, wait_ms = await self._call(self._admit_script, keys, args)
        except _FAILURES as exc:
            self._failed(exc, "admit")
            if self._on_failure == "closed":
                raise QuotaStoreUnavailable("the shared quota store did not answer") from None
            return _Unchecked(self, keys, lease)
        if int(which):
            raise QuotaExceeded(key_name, _LIMIT_NAMES[int(which)], float(wait_ms) / 1000)
        if lease:
            self._hold(keys[2], lease)
        return _RedisAdmission(self, keys, limits.tokens_per_minute, reserved, lease)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self._client.aclose()

    def _hold(self, streams_key: str, lease: str) -> None:
        self._held.setdefault(streams_key, set()).add(lease)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    def _drop(self, streams_key: str, lease: str) -> None:
        held = self._held.get(streams_key)
        if held is not None:
            held.discard(lease)
            if not held:
                del self._held[streams_key]

    async def _renew_forever(self) -> None:
        """Renews every lease this store holds, every renew_seconds, while it holds any."""
        while self._held:
            await asyncio.sleep(self._renew_seconds)
            for streams_key, leases in list(self._held.items()):
                if not leases:
                    continue
                try:
                    await self._call(self._renew_script, (streams_key,), (self._lease_ms, *leases))
                except _FAILURES as exc:
                    self._failed(exc, "lease renewal")
                except Exception:  # the renewals must go on for the other keys
                    log.exception("quota lease renewal failed")

    async def _call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[object]) -> Any:
        if time.monotonic() < self._skip_until:
            raise _Skipped()
        async with asyncio.timeout(self._timeout):
            result = await script(keys=keys, args=args)
        self._health.up()
        return result

    def _failed(self, exc: BaseException, during: str) -> None:
        if not isinstance(exc, _Skipped):
            self._skip_until = time.monotonic() + self._recheck_seconds
        self._health.down(exc, during)

    @property
    def reachable(self) -> bool:
        """False from a failure until the store answers again."""
        return self._health.is_up

    async def _release(
        self, keys: tuple[str, str, str], tokens_per_minute: int, extra: int, lease: str
    ) -> None:
        """Best effort: logs instead of raising."""
        if lease:
            self._drop(keys[2], lease)
        if not lease and not (tokens_per_minute and extra):
            return
        args = (tokens_per_minute, extra, lease, PERIOD_SECONDS * 1000)
        try:
            await self._call(self._release_script, (keys[1], keys[2]), args)
        except _FAILURES as exc:
            self._failed(exc, "release")
        except Exception:  # never into the caller's `finally`
            log.exception("quota release failed")


class _Skipped(RedisError):
    """Not asked: the store failed less than `recheck_seconds` ago."""

    def __str__(self) -> str:
        return "not asked, it failed moments ago"


class _Health:
    """Whether the store answers, and the warnings about it: one per outage, then one a minute."""

    REPEAT_SECONDS = 60.0

    def __init__(self, where: str, on_failure: str) -> None:
        self._where = where
        self._effect = (
            "requests go through without quotas" if on_failure == "open" else "requests are refused"
        )
        self.is_up = True
        self._since_warning = 0
        self._warned_at = 0.0

    def down(self, exc: BaseException, during: str) -> None:
        now = time.monotonic()
        if self.is_up or now - self._warned_at >= self.REPEAT_SECONDS:
            timed_out = isinstance(exc, TimeoutError | RedisTimeoutError)
            detail = "no answer in time" if timed_out else f"{type(exc).__name__}: {exc}"
            again = "" if self.is_up else f" (still; {self._since_warning} calls since the last warning)"
            log.warning(
                "quota store %s failed during %s (%s)%s: %s", self._where, during, detail, again, self._effect
            )
            self._warned_at, self._since_warning = now, 0
        else:
            self._since_warning += 1
        self.is_up = False

    def up(self) -> None:
        if not self.is_up:
            self.is_up = True
            log.info("quota store %s answers again: quotas apply", self._where)


def _where(client: aioredis.Redis) -> str:
    """host:port/db or the socket path, never the password."""
    kwargs = client.connection_pool.connection_kwargs
    place = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return f"redis {place}/{kwargs.get('db', 0)}"


def _or_minus_one(limit: int | None) -> int:
    return -1 if limit is None else max(0, limit)


class _NothingHeld(Admission):
    async def release(self, used_tokens: int | None) -> None:
        return None


_NOTHING_HELD = _NothingHeld()


class _RedisAdmission(Admission):
    __slots__ = ("_keys", "_lease", "_released", "_reserved", "_store", "_tokens_per_minute")

    def __init__(
        self,
        store: RedisQuotaStore,
        keys: tuple[str, str, str],
        tokens_per_minute: int | None,
        reserved: int,
        lease: str,
    ) -> None:
        self._store = store
        self._keys = keys
        self._tokens_per_minute = tokens_per_minute or 0
        self._reserved = reserved
        self._lease = lease
        self._released = False

    async def release(self, used_tokens: int | None) -> None:
        if self._released:  # once: a second call must not refund twice
            return
        self._released = True
        extra = 0 if used_tokens is None else max(0, used_tokens) - self._reserved
        await self._store._release(self._keys, self._tokens_per_minute, extra, self._lease)


class _Unchecked(Admission):
    """Let through while the store failed: nothing to give back, but a lease the
    script may have written after all is dropped if the store is back by now."""

    __slots__ = ("_keys", "_lease", "_store")

    def __init__(self, store: RedisQuotaStore, keys: tuple[str, str, str], lease: str) -> None:
        self._store = store
        self._keys = keys
        self._lease = lease

    async def release(self, used_tokens: int | None) -> None:
        lease, self._lease = self._lease, ""
        if lease and self._store.reachable:
            await self._store._release(self._keys, 0, 0, lease)


__all__ = ["RedisQuotaStore"]
