"""grpc.health.v1 with a cap on Watch streams.

Health answers without a key (load balancers and probes have none), and a
Watch stream never ends by itself: the reference servicer accepted 20,000 from
one anonymous client and kept their memory (~67 MB) until they left. So the
streams open at once are capped per process (AIGC_MAX_HEALTH_WATCHES); beyond
it, RESOURCE_EXHAUSTED with reason TOO_MANY_HEALTH_WATCHES. Check - what
Envoy, Kubernetes and the supervisor use - is one request, one answer, and is
never refused.
"""

from __future__ import annotations

from google.rpc import code_pb2
from grpc_health.v1 import health

from server.api.calls import request_id
from server.api.grpc_servicer import status_to_grpc
from server.errors import AigcError


class TooManyHealthWatches(AigcError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_HEALTH_WATCHES"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this server already holds {limit} health Watch streams (AIGC_MAX_HEALTH_WATCHES); "
            "use Check, or close a Watch first",
            metadata={"limit": str(limit)},
        )


class CappedHealthServicer(health.aio.HealthServicer):
    """The reference servicer, with at most `max_watches` Watch streams open at once."""

    def __init__(self, max_watches: int) -> None:
        super().__init__()
        self._max_watches = max_watches
        self._watches = 0

    async def Watch(self, request, context) -> None:  # noqa: N802 (the gRPC method name)
        if self._watches >= self._max_watches:
            status = TooManyHealthWatches(self._max_watches).to_status(
                request_id(context.invocation_metadata() or ())
            )
            await context.abort(*status_to_grpc(status))
        self._watches += 1
        try:
            await super().Watch(request, context)
        finally:
            self._watches -= 1
