"""The gate in front of the engine: who is calling, may they use this model,
is there room for one more call.

    gate.authenticate(metadata, peer)              -> CallerKey | None   (UNAUTHENTICATED)
    gate.check_model(key, route, requested)                              (PERMISSION_DENIED)
    ticket = await gate.admit(key, reserve_tokens=..., stream=...)       (RESOURCE_EXHAUSTED)
    ...
    await ticket.release(usage)                    # when the answer ends, however it ends

`admit` checks, in order, the worker's own limit on calls in flight (every
caller together: OVERLOADED, so a burst is refused at once instead of
collapsing the process) and the key's quotas (RATE_LIMITED), both with
RetryInfo. One gate serves every API adapter (gRPC today, the OpenAI-compatible
door later), so the same keys and limits hold on every surface.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.rpc import code_pb2

from server.access.clients import ClientAddresses
from server.access.keys import CallerKey, KeyRing, ModelNotAllowed
from server.access.quotas import Admission, QuotaStore
from server.errors import AigcError, retry_info

if TYPE_CHECKING:
    from server.routing import ModelRoute

log = logging.getLogger(__name__)

# What an overloaded worker tells callers to wait.
OVERLOADED_RETRY_SECONDS = 1.0


class Overloaded(AigcError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "OVERLOADED"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this server is at its limit of {limit} calls in flight; retry shortly",
            metadata={"limit": str(limit)},
        )

    def extra_details(self):
        return (retry_info(OVERLOADED_RETRY_SECONDS),)


class Ticket:
    """One admitted call: its place in the worker's count and its quota admission."""

    __slots__ = ("_admission", "_gate", "_released")

    def __init__(self, gate: Gate, admission: Admission | None) -> None:
        self._gate = gate
        self._admission = admission
        self._released = False

    async def release(self, used_tokens: int | None) -> None:
        if self._released:
            return
        self._released = True
        self._gate.in_flight -= 1
        if self._admission is not None:
            try:
                await self._admission.release(used_tokens)
            except Exception:  # a quota store's trouble never fails an answer already given
                log.warning("quota release failed", exc_info=True)


class Gate:
    def __init__(
        self,
        keys: KeyRing,
        quotas: QuotaStore | None,
        *,
        max_in_flight: int,
        clients: ClientAddresses | None = None,
    ) -> None:
        self.keys = keys
        self.quotas = quotas
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.clients = clients or ClientAddresses()

    def authenticate(self, metadata: Iterable[tuple[str, Any]], peer: str = "") -> CallerKey | None:
        """`peer`: the transport's peer (gRPC's `context.peer()`, or an IP address);
        with no caller keys configured, a caller on this machine needs no key."""
        metadata = tuple(metadata)
        local = self.keys.local_without_key and self.clients.is_local(peer, metadata)
        return self.keys.authenticate(metadata, local=local)

    def check_model(self, key: CallerKey | None, route: ModelRoute, requested: str) -> None:
        """The key may use the route if it lists its id or any of its aliases."""
        if key is not None and not key.allows(route.id, *route.aliases):
            raise ModelNotAllowed(key, requested or route.id)

    async def admit(self, key: CallerKey | None, *, reserve_tokens: int, stream: bool) -> Ticket:
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(self.max_in_flight)
        self.in_flight += 1
        try:
            admission = None
            if key is not None and self.quotas is not None and not key.limits.unlimited:
                admission = await self.quotas.admit(
                    key.name, key.limits, reserve_tokens=reserve_tokens, stream=stream
                )
        except BaseException:
            self.in_flight -= 1
            raise
        return Ticket(self, admission)


__all__ = ["OVERLOADED_RETRY_SECONDS", "Gate", "Overloaded", "Ticket"]
