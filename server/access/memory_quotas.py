"""Quotas kept in this process: the default, nothing to install.

Each key has three pieces of state, each a number:
- `request_tat`, `token_tat`: GCRA's "theoretical arrival time". A limit of N
  per minute spends `60/N` seconds of it per unit; a request passes while the
  TAT it would leave is at most one minute ahead of now. So a full minute's
  budget can go at once, and it comes back continuously (one unit every 60/N s).
  A TAT in the past means a full budget; nothing else needs remembering.
- `streams`: how many of the key's streams are open.

Everything happens between two awaits of one event loop, so each admit and
release is atomic without a lock. With several processes (AIGC_WORKERS > 1, or
replicas) each has its own budget: that is what RedisQuotaStore is for.

The rules both stores share (tests/server/access runs them against both):
- a reservation larger than a whole minute's tokens is cut to a minute's
  worth - otherwise it could never pass, and a "retry after" that never comes
  true is worse than an answer; `release` then charges what was really used;
- a limit of 0 lets nothing through (retry after a minute for rates);
- a stream refused for the concurrency cap is told to retry after
  STREAM_RETRY_SECONDS: nobody knows when another stream of the key ends.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from server.access.quotas import Admission, QuotaExceeded, QuotaLimits, QuotaStore

PERIOD_SECONDS = 60.0
# The hint given with a refused stream: another stream of the key may end any moment.
STREAM_RETRY_SECONDS = 1.0
# A request that would pass within this much time passes now: float rounding
# (60/7 added seven times is not exactly 60) must never refuse the Nth of N.
SLACK_SECONDS = 0.001


def reservation(limits: QuotaLimits, reserve_tokens: int) -> int:
    """The tokens taken up front: never more than one minute's budget (see the module docstring)."""
    reserve = max(0, reserve_tokens)
    if limits.tokens_per_minute:
        reserve = min(reserve, limits.tokens_per_minute)
    return reserve


@dataclasses.dataclass(slots=True)
class _KeyState:
    request_tat: float = 0.0
    token_tat: float = 0.0
    streams: int = 0


def _gcra(tat: float, now: float, limit: int, cost: float) -> tuple[float, float]:
    """(the TAT after taking `cost`, seconds to wait first; 0 = passes now)."""
    if limit <= 0:
        return tat, PERIOD_SECONDS
    new_tat = max(tat, now) + cost * PERIOD_SECONDS / limit
    wait = new_tat - PERIOD_SECONDS - now
    return new_tat, wait if wait > SLACK_SECONDS else 0.0


class MemoryQuotaStore(QuotaStore):
    """GCRA rate limits and a stream count per key, in this process's memory.

    `clock` (seconds, monotonic) is injectable so tests can move time.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Keyed by the configured key names, so bounded by the configuration.
        self._keys: dict[str, _KeyState] = {}

    async def admit(
        self, key_name: str, limits: QuotaLimits, *, reserve_tokens: int, stream: bool
    ) -> Admission:
        if limits.unlimited:
            return _NOTHING_HELD
        now = self._clock()
        state = self._keys.setdefault(key_name, _KeyState())
        request_tat = token_tat = None
        if limits.requests_per_minute is not None:
            request_tat, wait = _gcra(state.request_tat, now, limits.requests_per_minute, 1)
            if wait > 0:
                raise QuotaExceeded(key_name, "requests_per_minute", wait)
        reserved = reservation(limits, reserve_tokens)
        if limits.tokens_per_minute is not None:
            token_tat, wait = _gcra(state.token_tat, now, limits.tokens_per_minute, reserved)
            if wait > 0:
                raise QuotaExceeded(key_name, "tokens_per_minute", wait)
        holds_stream = stream and limits.max_concurrent_streams is not None
        if holds_stream and state.streams >= limits.max_concurrent_streams:
            raise QuotaExceeded(key_name, "max_concurrent_streams", STREAM_RETRY_SECONDS)
        # Every limit passed: take all of it.
        if request_tat is not None:
            state.request_tat = request_tat
        if token_tat is not None:
            state.token_tat = token_tat
        if holds_stream:
            state.streams += 1
        return _MemoryAdmission(self, key_name, limits.tokens_per_minute, reserved, holds_stream)

    def _release(
        self, key_name: str, tokens_per_minute: int | None, extra_tokens: int, holds_stream: bool
    ) -> None:
        state = self._keys.get(key_name)
        if state is None:
            return
        if holds_stream:
            state.streams = max(0, state.streams - 1)
        if tokens_per_minute and extra_tokens:
            # A refund cannot bank more than a full budget: a TAT before now is the same as now.
            now = self._clock()
            state.token_tat = max(
                now, max(state.token_tat, now) + extra_tokens * PERIOD_SECONDS / tokens_per_minute
            )


class _NothingHeld(Admission):
    async def release(self, used_tokens: int | None) -> None:
        return None


_NOTHING_HELD = _NothingHeld()


class _MemoryAdmission(Admission):
    __slots__ = ("_holds_stream", "_key_name", "_released", "_reserved", "_store", "_tokens_per_minute")

    def __init__(
        self,
        store: MemoryQuotaStore,
        key_name: str,
        tokens_per_minute: int | None,
        reserved: int,
        holds_stream: bool,
    ) -> None:
        self._store = store
        self._key_name = key_name
        self._tokens_per_minute = tokens_per_minute
        self._reserved = reserved
        self._holds_stream = holds_stream
        self._released = False

    async def release(self, used_tokens: int | None) -> None:
        if self._released:  # once: a second call must not free a slot or refund twice
            return
        self._released = True
        extra = 0 if used_tokens is None else max(0, used_tokens) - self._reserved
        self._store._release(self._key_name, self._tokens_per_minute, extra, self._holds_stream)


__all__ = ["MemoryQuotaStore"]
