"""Gemini's error answers, classified: google.rpc-style bodies to UpstreamError.

    error_from_response(...)   an error answer (or a 200 that is not an event stream)
    stream_error(...)          an `{"error": ...}` event inside a 200 stream

Gemini's body carries a google.rpc `status` name, which decides before the
HTTP status does (except for statuses that say more, such as 413 and 429),
and `details` with ErrorInfo reasons (a bad key is a 400 INVALID_ARGUMENT
whose reason says API_KEY_INVALID) and RetryInfo delays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from server.errors import UpstreamError, UpstreamFailure, error_body, failure_for_http_status
from server.providers.base import retry_after_seconds

# google.rpc canonical status names in error bodies; they decide before the HTTP status does.
_STATUSES = {
    "INVALID_ARGUMENT": UpstreamFailure.BAD_REQUEST,
    "FAILED_PRECONDITION": UpstreamFailure.BAD_REQUEST,  # e.g. "User location is not supported"
    "OUT_OF_RANGE": UpstreamFailure.BAD_REQUEST,
    "UNAUTHENTICATED": UpstreamFailure.AUTHENTICATION,
    "PERMISSION_DENIED": UpstreamFailure.AUTHENTICATION,
    "NOT_FOUND": UpstreamFailure.MODEL_NOT_FOUND,
    "RESOURCE_EXHAUSTED": UpstreamFailure.RATE_LIMITED,
    "DEADLINE_EXCEEDED": UpstreamFailure.TIMEOUT,
    "INTERNAL": UpstreamFailure.SERVER_ERROR,
    "UNAVAILABLE": UpstreamFailure.SERVER_ERROR,
}
# HTTP statuses that say more than the body's status (a 413 is INVALID_ARGUMENT in the body).
_SPECIFIC_HTTP = frozenset({401, 403, 404, 408, 413, 429})
# ErrorInfo reasons that override the status: a bad key is a 400 INVALID_ARGUMENT.
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)s")


def error_from_response(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...]
) -> UpstreamError:
    """An error answer (or a 200 that is not an event stream) as UpstreamError."""
    parsed = error_body(body)
    if status == 200:
        if isinstance(parsed, Mapping) and "error" in parsed:
            return stream_error(provider, parsed, secrets)
        return UpstreamError(
            UpstreamFailure.MALFORMED_RESPONSE,
            f"expected an event stream, got {headers.get('content-type')!r}",
            provider=provider,
            secrets=secrets,
        )
    error = _error_object(parsed)
    details = _details(error)
    failure = _STATUSES.get(str(error.get("status", "")))
    if _reasons(details) & _AUTH_REASONS:
        failure = UpstreamFailure.AUTHENTICATION
    elif failure is None or status in _SPECIFIC_HTTP:
        failure = failure_for_http_status(status)
    retry_after = retry_after_seconds(headers.get("retry-after"))
    if retry_after is None:
        retry_after = retry_delay(details)
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = body.decode("utf-8", "replace").strip()[:500] or "no error message"
    return UpstreamError(
        failure,
        f"HTTP {status}: {message}",
        provider=provider,
        upstream_status=status,
        retry_after_seconds=retry_after,
        secrets=secrets,
    )


def stream_error(provider: str, event: Mapping[str, Any], secrets: tuple[str, ...]) -> UpstreamError:
    """An `{"error": {...}}` object inside a 200 stream, classified by its status (else code)."""
    error = _error_object(event)
    details = _details(error)
    failure = _STATUSES.get(str(error.get("status", "")))
    if _reasons(details) & _AUTH_REASONS:
        failure = UpstreamFailure.AUTHENTICATION
    elif failure is None:
        code = error.get("code")
        failure = (
            failure_for_http_status(code)
            if isinstance(code, int) and code >= 400
            else UpstreamFailure.SERVER_ERROR
        )
    message = error.get("message") or event.get("error")
    return UpstreamError(
        failure,
        f"error in stream: {message}",
        provider=provider,
        retry_after_seconds=retry_delay(details),
        secrets=secrets,
    )


def retry_delay(details: Iterable[Mapping[str, Any]]) -> float | None:
    """The RetryInfo `retryDelay` ("30s", "0.5s") of an error's details, in seconds."""
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.fullmatch(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _error_object(body: Any) -> Mapping[str, Any]:
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _details(error: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []


def _reasons(details: Iterable[Mapping[str, Any]]) -> set[str]:
    return {
        str(d.get("reason"))
        for d in details
        if str(d.get("@type", "")).endswith("google.rpc.ErrorInfo") and d.get("reason")
    }


__all__ = ["error_from_response", "retry_delay", "stream_error"]
