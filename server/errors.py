"""Every error the service returns, and the one place they become google.rpc.Status.

    AigcError                      code + stable reason + message + metadata
    ├── InvalidRequest             INVALID_ARGUMENT  INVALID_REQUEST (+ google.rpc.BadRequest)
    ├── CapabilityNotSupported     INVALID_ARGUMENT  CAPABILITY_NOT_SUPPORTED (+ BadRequest)
    ├── ModelNotFound              NOT_FOUND         MODEL_NOT_FOUND
    ├── ProviderNotConfigured      FAILED_PRECONDITION PROVIDER_NOT_CONFIGURED (e.g. API key unset)
    ├── AnswerTooLarge             OUT_OF_RANGE      ANSWER_TOO_LARGE (a unary answer past the limit)
    ├── InternalError              INTERNAL          INTERNAL
    └── UpstreamError              the vendor failed; `UPSTREAM_TABLE` gives code and reason
                                   per `UpstreamFailure`, with RetryInfo when the vendor
                                   sent Retry-After

Provider modules never pick status codes: they classify what went wrong as an
`UpstreamFailure` and this module decides, in `UPSTREAM_TABLE`, what the
caller sees. The README's error table is this table.

Codes are the canonical `google.rpc.Code` values, not gRPC's enum: the core
knows nothing of gRPC, and each API adapter (server/api/) maps them to its
transport (gRPC status, HTTP status).

Every status carries a `google.rpc.ErrorInfo` with domain `aigc-service`, the
reason, and metadata (request id, model, provider, upstream status and request
id...). Each reason's metadata keys are fixed, declared in `ERROR_INFO_KEYS`:
AIP-193 says a key once observed for a reason must always be present, so a key
whose value is unknown in one case is sent empty rather than left out.
Messages are redacted of configured secrets before they leave.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

DOMAIN = "aigc-service"

_UPSTREAM_KEYS = ("request_id", "provider", "upstream_status", "upstream_request_id")

# Every ErrorInfo reason and its metadata keys: always all of them, "" where a
# value is unknown (AIP-193). Clients may key on them, so a key is added to a
# reason, never removed. The reasons Envoy makes itself (gateway/envoy.yaml's
# local replies) are here too, so this is the whole list; docs/errors.md
# documents each, and tests/server/test_errors.py holds both to it.
ERROR_INFO_KEYS: dict[str, tuple[str, ...]] = {
    # The server's own (this module, server/api/calls.py, server/access/).
    "INVALID_REQUEST": ("request_id",),
    "CAPABILITY_NOT_SUPPORTED": ("request_id", "model", "capability", "field"),
    "MODEL_NOT_FOUND": ("request_id", "model"),
    "PROVIDER_NOT_CONFIGURED": ("request_id", "model", "provider"),
    "INTERNAL": ("request_id",),
    "SHUTTING_DOWN": ("request_id",),
    "MALFORMED_REQUEST": ("request_id",),
    "REQUEST_TOO_LARGE": ("request_id", "limit_bytes"),
    "API_KEY_MISSING": ("request_id",),
    "API_KEY_INVALID": ("request_id",),
    "MODEL_NOT_ALLOWED": ("request_id", "key_name", "model"),
    "RATE_LIMITED": ("request_id", "key_name", "limit"),
    "QUOTA_STORE_UNAVAILABLE": ("request_id",),
    "OVERLOADED": ("request_id", "limit"),
    "TOO_MANY_HEALTH_WATCHES": ("request_id", "limit"),
    "ANSWER_TOO_LARGE": ("request_id", "limit_bytes"),
    # server/api/anthropic_door/app.py: an Anthropic route this service does not offer.
    "NOT_OFFERED": ("request_id",),
    # The admin API (server/admin/).
    "ADMIN_API_DISABLED": ("request_id",),
    "ADMIN_KEY_REQUIRED": ("request_id",),
    "STORE_DISABLED": ("request_id",),
    "KEY_NOT_FOUND": ("request_id", "name"),
    "KEY_EXISTS": ("request_id", "key_id"),
    "KEY_READ_ONLY": ("request_id", "name"),
    "AUTHENTICATION_OFF": ("request_id",),
    # A vendor's failure (UPSTREAM_TABLE below); `timeout` says which limit fired.
    "UPSTREAM_INVALID_REQUEST": _UPSTREAM_KEYS,
    "CONTEXT_LENGTH_EXCEEDED": _UPSTREAM_KEYS,
    "CONTENT_FILTERED": _UPSTREAM_KEYS,
    "UPSTREAM_AUTH_FAILED": _UPSTREAM_KEYS,
    "UPSTREAM_MODEL_NOT_FOUND": _UPSTREAM_KEYS,
    "UPSTREAM_TIMEOUT": (*_UPSTREAM_KEYS, "timeout"),
    "UPSTREAM_RATE_LIMITED": _UPSTREAM_KEYS,
    "UPSTREAM_SERVER_ERROR": _UPSTREAM_KEYS,
    "UPSTREAM_UNREACHABLE": _UPSTREAM_KEYS,
    "UPSTREAM_STREAM_INTERRUPTED": _UPSTREAM_KEYS,
    "UPSTREAM_MALFORMED_RESPONSE": _UPSTREAM_KEYS,
    # Envoy's, for HTTP callers (gateway/envoy.yaml, local_reply_config).
    "UNSUPPORTED_MEDIA_TYPE": ("request_id", "content_type"),
    "REQUEST_HEADERS_TOO_LARGE": ("request_id",),
    "REQUEST_HEADERS_TIMEOUT": ("request_id",),
    # No request id: Envoy could not parse the request far enough to give it one.
    "MALFORMED_HTTP_REQUEST": ("details",),
    "INVALID_QUERY_PARAMETER": ("request_id",),
    "MALFORMED_REQUEST_BODY": ("request_id",),
    "UNKNOWN_ROUTE": ("request_id",),
    "GATEWAY_OVERLOADED": ("request_id", "flags"),
    "BACKEND_UNAVAILABLE": ("request_id", "flags"),
    "DEADLINE_EXCEEDED": ("request_id",),
    "GATEWAY_ERROR": ("request_id", "details"),
}


class AigcError(Exception):
    """Base of every error the service reports to callers."""

    #: A google.rpc.Code value.
    code: int = code_pb2.INTERNAL
    reason: str = "INTERNAL"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        # A reason or key not in ERROR_INFO_KEYS is a bug: caught where the
        # error is made (every test that makes it), not by a client later.
        declared = ERROR_INFO_KEYS.get(self.reason)
        if declared is None:
            raise ValueError(f"ErrorInfo reason {self.reason!r} is not declared in ERROR_INFO_KEYS")
        undeclared = set(self.metadata).difference(declared)
        if undeclared:
            raise ValueError(f"ErrorInfo keys {sorted(undeclared)} are not declared for {self.reason}")

    def extra_details(self) -> Iterable[any_pb2.Any]:
        """Details beyond ErrorInfo (BadRequest, RetryInfo) for subclasses."""
        return ()

    def to_status(self, request_id: str = "") -> status_pb2.Status:
        # Every declared key, "" where this case does not know its value.
        values = {**self.metadata, "request_id": request_id}
        metadata = {key: values.get(key, "") for key in ERROR_INFO_KEYS[self.reason]}
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=metadata)
        status = status_pb2.Status(code=self.code, message=self.message)
        status.details.add().Pack(info)
        status.details.extend(self.extra_details())
        return status


class InvalidRequest(AigcError):
    """The request breaks the contract; `violations` names each bad field."""

    code = code_pb2.INVALID_ARGUMENT
    reason = "INVALID_REQUEST"

    def __init__(self, violations: Mapping[str, str]) -> None:
        self.violations = dict(violations)
        summary = "; ".join(f"{field}: {why}" for field, why in self.violations.items())
        super().__init__(f"invalid request: {summary}")

    def extra_details(self) -> Iterable[any_pb2.Any]:
        return (_bad_request(self.violations),)


class CapabilityNotSupported(AigcError):
    """The request needs something its model cannot do (see aigc.v1.Capability)."""

    code = code_pb2.INVALID_ARGUMENT
    reason = "CAPABILITY_NOT_SUPPORTED"

    def __init__(self, model: str, capability: str, field: str, what: str) -> None:
        self.field = field
        super().__init__(
            f"model {model!r} does not support {what} ({capability}), which {field} needs; "
            "ListModels (GET /v1/models) shows each model's capabilities",
            metadata={"model": model, "capability": capability, "field": field},
        )
        self._what = what

    def extra_details(self) -> Iterable[any_pb2.Any]:
        return (_bad_request({self.field: f"needs {self._what}, which this model does not support"}),)


def _bad_request(violations: Mapping[str, str]) -> any_pb2.Any:
    bad = error_details_pb2.BadRequest()
    for field, why in violations.items():
        bad.field_violations.add(field=field, description=why)
    packed = any_pb2.Any()
    packed.Pack(bad)
    return packed


class ModelNotFound(AigcError):
    code = code_pb2.NOT_FOUND
    reason = "MODEL_NOT_FOUND"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"model {model!r} is not served here; ListModels (GET /v1/models) shows what is",
            metadata={"model": model},
        )


class ProviderNotConfigured(AigcError):
    """The model is listed but its provider cannot serve (its API key is unset)."""

    code = code_pb2.FAILED_PRECONDITION
    reason = "PROVIDER_NOT_CONFIGURED"

    def __init__(self, model: str, provider: str, hint: str) -> None:
        super().__init__(
            f"model {model!r} needs provider {provider!r}, which is not configured: {hint}",
            metadata={"model": model, "provider": provider},
        )


class AnswerTooLarge(AigcError):
    """A unary answer grew past the limit every surface can deliver whole (server/core/limits.py)."""

    code = code_pb2.OUT_OF_RANGE
    reason = "ANSWER_TOO_LARGE"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the answer grew past {limit} bytes, the most a unary call delivers; "
            "the streaming methods (StreamChat, stream: true) have no such limit",
            metadata={"limit_bytes": str(limit)},
        )


class InternalError(AigcError):
    """A bug or misconfiguration on our side; details are in the server log."""


class UpstreamFailure(enum.Enum):
    """What went wrong at the vendor, as classified by a provider module."""

    BAD_REQUEST = "bad_request"  # 400/422 the vendor rejected the request
    CONTEXT_TOO_LONG = "context_too_long"  # 413, or the vendor's context-length code
    CONTENT_FILTERED = "content_filtered"  # the vendor refused the input on policy grounds
    AUTHENTICATION = "authentication"  # 401/403: our key is wrong, not the caller's fault
    MODEL_NOT_FOUND = "model_not_found"  # 404 the vendor does not know the model
    TIMEOUT = "timeout"  # 408, or no answer in time
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx
    UNREACHABLE = "unreachable"  # connection refused/reset, DNS, proxy failure (incl. a 407)
    STREAM_INTERRUPTED = "stream_interrupted"  # the stream ended before its end marker
    MALFORMED_RESPONSE = "malformed_response"  # a body or chunk we cannot parse


# The one mapping from upstream failures to what callers see.
UPSTREAM_TABLE: dict[UpstreamFailure, tuple[int, str]] = {
    UpstreamFailure.BAD_REQUEST: (code_pb2.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST"),
    UpstreamFailure.CONTEXT_TOO_LONG: (code_pb2.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED"),
    UpstreamFailure.CONTENT_FILTERED: (code_pb2.INVALID_ARGUMENT, "CONTENT_FILTERED"),
    UpstreamFailure.AUTHENTICATION: (code_pb2.INTERNAL, "UPSTREAM_AUTH_FAILED"),
    UpstreamFailure.MODEL_NOT_FOUND: (code_pb2.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND"),
    UpstreamFailure.TIMEOUT: (code_pb2.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
    UpstreamFailure.RATE_LIMITED: (code_pb2.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"),
    UpstreamFailure.SERVER_ERROR: (code_pb2.UNAVAILABLE, "UPSTREAM_SERVER_ERROR"),
    UpstreamFailure.UNREACHABLE: (code_pb2.UNAVAILABLE, "UPSTREAM_UNREACHABLE"),
    UpstreamFailure.STREAM_INTERRUPTED: (code_pb2.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED"),
    UpstreamFailure.MALFORMED_RESPONSE: (code_pb2.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE"),
}


_RETRYABLE = frozenset(
    {
        UpstreamFailure.RATE_LIMITED,
        UpstreamFailure.SERVER_ERROR,
        UpstreamFailure.UNREACHABLE,
        UpstreamFailure.STREAM_INTERRUPTED,
    }
)


def error_body(body: bytes) -> Any:
    """A vendor's error response body as JSON, or None when it is not JSON (an HTML page, a proxy's text)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def failure_for_http_status(status: int) -> UpstreamFailure:
    """Classifies a vendor's HTTP error status when its body says nothing more specific."""
    if status == 407:
        # A forwarding proxy refused our proxy credentials: the path to the
        # vendor failed, not the caller's request (like a CONNECT refused).
        return UpstreamFailure.UNREACHABLE
    if status in (401, 403):
        return UpstreamFailure.AUTHENTICATION
    if status == 404:
        return UpstreamFailure.MODEL_NOT_FOUND
    if status == 408:
        return UpstreamFailure.TIMEOUT
    if status == 413:
        return UpstreamFailure.CONTEXT_TOO_LONG
    if status == 429:
        return UpstreamFailure.RATE_LIMITED
    if status >= 500:
        return UpstreamFailure.SERVER_ERROR
    return UpstreamFailure.BAD_REQUEST


class UpstreamError(AigcError):
    """The provider's vendor failed. Code and reason come from UPSTREAM_TABLE."""

    def __init__(
        self,
        failure: UpstreamFailure,
        message: str,
        *,
        provider: str,
        upstream_status: int | None = None,
        upstream_request_id: str | None = None,
        retry_after_seconds: float | None = None,
        secrets: Iterable[str] = (),
        timeout: str = "",
        retryable: bool | None = None,
    ) -> None:
        self.failure = failure
        self._retryable = retryable
        self.code, self.reason = UPSTREAM_TABLE[failure]
        self.retry_after_seconds = retry_after_seconds
        self.upstream_status = upstream_status
        super().__init__(
            f"{provider}: {redact(message, secrets)}",
            metadata={
                "provider": provider,
                "upstream_status": str(upstream_status) if upstream_status else "",
                "upstream_request_id": upstream_request_id or "",
                # Which limit fired, for TIMEOUT: connect, first_token, idle, total, deadline.
                **({"timeout": timeout} if failure is UpstreamFailure.TIMEOUT else {}),
            },
        )

    @property
    def retryable(self) -> bool:
        """Worth another attempt, if nothing was sent to the caller yet: the
        vendor was busy (429, 5xx, an error event saying so), the connection
        failed or was cut, it could not even be opened in time (connect), or
        the vendor timed the request out itself (408, 504). Not the other
        TIMEOUTs: the caller's deadline cannot be beaten by trying again, and
        after a first-token, idle or total limit the time is spent - a
        fallback model may still be tried (server/core/engine.py)."""
        if self._retryable is not None:
            return self._retryable
        if self.failure is UpstreamFailure.TIMEOUT:
            return self.upstream_status in (408, 504) or self.metadata.get("timeout") == "connect"
        return self.failure in _RETRYABLE

    def extra_details(self) -> Iterable[any_pb2.Any]:
        if self.retry_after_seconds is None:
            return ()
        return (retry_info(self.retry_after_seconds),)


def retry_info(seconds: float) -> any_pb2.Any:
    """A packed google.rpc.RetryInfo saying to wait `seconds`."""
    seconds = max(0.0, seconds)
    delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return packed


# What a caller's own retry can fix: a vendor or replica that is down or busy,
# a rate limit. Not a bad request, a caller's deadline (the next try has the
# same one), UPSTREAM_AUTH_FAILED or our own bug - and the core has already
# retried what it could (server/core/retry.py).
_CALLER_RETRYABLE = frozenset({code_pb2.UNAVAILABLE, code_pb2.RESOURCE_EXHAUSTED, code_pb2.ABORTED})
# The longest RetryInfo wait still worth a retry: the OpenAI SDKs wait out a
# Retry-After only up to 60 s, and retry sooner otherwise.
_MAX_RETRY_WAIT_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class StatusFacts:
    """What the doors read out of a google.rpc.Status's details, unpacked once."""

    reason: str = ""
    request_id: str = ""
    retry_seconds: float | None = None  # RetryInfo's delay
    field: str | None = None  # BadRequest's first field violation


def status_facts(status: status_pb2.Status) -> StatusFacts:
    """The ErrorInfo reason and request id, the RetryInfo delay and the first BadRequest field."""
    reason, request_id, retry, field = "", "", None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, request_id = info.reason, info.metadata.get("request_id", "")
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            delay = error_details_pb2.RetryInfo()
            detail.Unpack(delay)
            retry = delay.retry_delay.seconds + delay.retry_delay.nanos / 1e9
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            if bad.field_violations:
                field = bad.field_violations[0].field
    return StatusFacts(reason, request_id, retry, field)


def caller_should_retry(code: int, retry_seconds: float | None) -> bool:
    """Whether a caller's retry of the same call can pass, from the Status's code and its
    RetryInfo delay (status_facts): sent as `x-should-retry` (the OpenAI SDKs obey it
    before their own rule, which retries every 5xx)."""
    if code not in _CALLER_RETRYABLE:
        return False
    return retry_seconds is None or retry_seconds <= _MAX_RETRY_WAIT_SECONDS


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED]")
    return text
