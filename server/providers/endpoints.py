"""Several (base URL, key) pairs behind one upstream: balanced, a failing one left out a while.

An operator with two API keys (two accounts, two rate limits) or two base
URLs (two regions, a gateway and a direct route) configures them on one
upstream (`base_urls`, `api_key_envs` in the catalog). Each call takes the
next pair in turn (round robin); a pair that fails in a way the next call
would likely repeat - refused connections, 5xx, 429, our key refused, no
first token - is ejected for EJECT_SECONDS (or the vendor's Retry-After, if
longer), and calls go to the others. When every pair is out, the one that
went out first is tried: never no answer at all. The core's retry
(server/core/retry.py) then lands on the next healthy pair by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from server.errors import UpstreamError, UpstreamFailure
from server.providers.http import HttpTransport

log = logging.getLogger(__name__)

EJECT_SECONDS = 30.0
_EJECTING = frozenset(
    {
        UpstreamFailure.UNREACHABLE,
        UpstreamFailure.SERVER_ERROR,
        UpstreamFailure.RATE_LIMITED,
        UpstreamFailure.AUTHENTICATION,
        UpstreamFailure.TIMEOUT,
    }
)


class Endpoint:
    __slots__ = ("ejected_until", "label", "transport")

    def __init__(self, transport: HttpTransport, label: str) -> None:
        self.transport = transport
        # What logs may show: the base URL and the key's position, never the key.
        self.label = label
        self.ejected_until = 0.0


class Endpoints:
    def __init__(self, endpoints: Sequence[Endpoint], *, clock: Callable[[], float] = time.monotonic) -> None:
        assert endpoints, "an upstream has at least one endpoint"
        self.all = tuple(endpoints)
        self._next = 0
        self._clock = clock

    def pick(self) -> Endpoint:
        """The next healthy endpoint in turn; with none healthy, the one out longest."""
        endpoints = self.all
        if len(endpoints) == 1:
            return endpoints[0]
        now = self._clock()
        for _ in range(len(endpoints)):
            endpoint = endpoints[self._next % len(endpoints)]
            self._next += 1
            if endpoint.ejected_until <= now:
                return endpoint
        return min(endpoints, key=lambda e: e.ejected_until)

    def failed(self, endpoint: Endpoint, error: UpstreamError) -> None:
        if len(self.all) == 1 or error.failure not in _EJECTING:
            return
        if error.failure is UpstreamFailure.TIMEOUT and error.metadata.get("timeout") == "deadline":
            return  # the caller's deadline, not the endpoint's fault
        seconds = max(EJECT_SECONDS, error.retry_after_seconds or 0.0)
        endpoint.ejected_until = self._clock() + seconds
        log.warning(
            "endpoint %s left out for %.0fs after %s",
            endpoint.label,
            seconds,
            error.reason,
            extra={"endpoint": endpoint.label, "error_reason": error.reason},
        )


__all__ = ["EJECT_SECONDS", "Endpoint", "Endpoints"]
