"""Per-key quotas: requests and tokens per minute, and concurrent streams.

    store = MemoryQuotaStore()                  # one process (the default)
    store = RedisQuotaStore(url, on_failure=…)  # shared by every replica

    admission = await store.admit(key_name, limits, reserve_tokens=512, stream=True)
    ...                                         # QuotaExceeded (RATE_LIMITED) if over
    await admission.release(used_tokens=730)    # when the answer ends, however it ends

Semantics, the same for both stores:
- requests_per_minute and tokens_per_minute are GCRA limits (the generic cell
  rate algorithm, as in Redis-cell and many API gateways): a full minute's
  budget may be spent at once, and it refills continuously, so there is no
  window edge to game. A denied request consumes nothing.
- tokens: `reserve_tokens` (the request's max_output_tokens, or the model's
  cap) is taken up front, so a caller cannot start a hundred huge answers at
  once; `release(used_tokens)` charges what the answer really used (prompt and
  completion) instead - the difference is given back or taken. The engine
  passes the vendor's usage, or for a call without it (a stream cancelled
  before its last chunk) an estimate of its prompt and the output so far
  (server/core/engine.py `tokens_used`); `release(None)` keeps the reservation.
- max_concurrent_streams: generation calls of the key in flight at the same
  time across every replica - streams, and unary Chat/Complete calls too (a
  unary call holds the vendor just as long); ListModels is not counted. In
  Redis each holds a lease that its replica renews every RENEW_SECONDS while
  the call runs; a replica that dies (kill -9) stops renewing, and its leases
  expire within LEASE_SECONDS.
- A denial says which limit and how long until it would pass (RetryInfo).
- Redis unreachable or slow (more than `timeout` seconds): the documented
  choice in `on_failure` - "open" lets the request through and logs a warning
  (quotas protect spend; an outage of the quota store should not take the API
  down - authentication still holds), "closed" refuses with UNAVAILABLE
  (QUOTA_STORE_UNAVAILABLE). Never a hang.
"""

from __future__ import annotations

import abc
import dataclasses

from google.rpc import code_pb2

from server.errors import AigcError, retry_info

# A call's lease in the shared store lives LEASE_SECONDS past its last
# renewal; a living replica renews its leases every RENEW_SECONDS, so only a
# dead replica's leases expire - within LEASE_SECONDS of its death.
LEASE_SECONDS = 10.0
RENEW_SECONDS = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class QuotaLimits:
    """One key's limits; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_streams: int | None = None

    @property
    def unlimited(self) -> bool:
        return (
            self.requests_per_minute is None
            and self.tokens_per_minute is None
            and (self.max_concurrent_streams is None)
        )


class QuotaExceeded(AigcError):
    """The caller's key is over one of its quotas."""

    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"

    def __init__(self, key_name: str, limit: str, retry_after_seconds: float) -> None:
        self.retry_after_seconds = max(0.0, retry_after_seconds)
        super().__init__(
            f"key {key_name!r} is over its {limit} quota; retry after {self.retry_after_seconds:.1f}s",
            metadata={"key_name": key_name, "limit": limit},
        )

    def extra_details(self):
        return (retry_info(self.retry_after_seconds),)


class QuotaStoreUnavailable(AigcError):
    """The shared quota store cannot be reached and quotas fail closed."""

    code = code_pb2.UNAVAILABLE
    reason = "QUOTA_STORE_UNAVAILABLE"

    def __init__(self, detail: str) -> None:
        super().__init__(f"quotas cannot be checked right now ({detail}); retry shortly")


class Admission(abc.ABC):
    """What `admit` granted; `release` once, when the answer ends."""

    @abc.abstractmethod
    async def release(self, used_tokens: int | None) -> None:
        """Charges `used_tokens` instead of the reservation (None: keep it) and frees the stream slot."""


class QuotaStore(abc.ABC):
    @abc.abstractmethod
    async def admit(
        self, key_name: str, limits: QuotaLimits, *, reserve_tokens: int, stream: bool
    ) -> Admission:
        """Takes one request, `reserve_tokens` tokens and (if `stream`) a stream slot,
        all or nothing; raises QuotaExceeded naming the first limit that is over."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections."""


__all__ = [
    "LEASE_SECONDS",
    "RENEW_SECONDS",
    "Admission",
    "QuotaExceeded",
    "QuotaLimits",
    "QuotaStore",
    "QuotaStoreUnavailable",
]
