"""Anthropic's error answers and `error` events, classified into UpstreamError.

    error_from_response(...)   an error answer (or a 200 that is not an event stream)
    stream_error(...)          an `error` event inside a 200 stream

`error.type` decides before the HTTP status does (inside a stream the status
is 200); the `request-id` header (or the body's `request_id`) becomes the
upstream request id, Retry-After the RetryInfo.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.errors import UpstreamError, UpstreamFailure, error_body, failure_for_http_status
from server.providers.base import retry_after_seconds

# `error.type` of error bodies and `error` events. It decides before the HTTP
# status does: inside a stream the status is 200.
_ERROR_TYPES = {
    "invalid_request_error": UpstreamFailure.BAD_REQUEST,  # 400
    "authentication_error": UpstreamFailure.AUTHENTICATION,  # 401
    # 402: our account cannot pay - like a bad key, the operator's problem.
    "billing_error": UpstreamFailure.AUTHENTICATION,
    "permission_error": UpstreamFailure.AUTHENTICATION,  # 403
    "not_found_error": UpstreamFailure.MODEL_NOT_FOUND,  # 404
    "request_too_large": UpstreamFailure.CONTEXT_TOO_LONG,  # 413
    "rate_limit_error": UpstreamFailure.RATE_LIMITED,  # 429
    "timeout_error": UpstreamFailure.TIMEOUT,  # 504 (408 from proxies)
    "api_error": UpstreamFailure.SERVER_ERROR,  # 500
    "overloaded_error": UpstreamFailure.SERVER_ERROR,  # 529
}


def error_from_response(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...]
) -> UpstreamError:
    """An error answer (or a 200 that is not an event stream) as UpstreamError."""
    parsed = error_body(body)
    request_id = headers.get("request-id") or _body_request_id(parsed)
    if status == 200:
        if isinstance(parsed, Mapping) and parsed.get("type") == "error":
            return stream_error(provider, parsed, request_id, secrets)
        return UpstreamError(
            UpstreamFailure.MALFORMED_RESPONSE,
            f"expected an event stream, got {headers.get('content-type')!r}",
            provider=provider,
            upstream_request_id=request_id,
            secrets=secrets,
        )
    kind, message = _error_fields(parsed)
    failure = _ERROR_TYPES.get(kind) or failure_for_http_status(status)
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = text[:500]
    summary = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
    return UpstreamError(
        failure,
        summary,
        provider=provider,
        upstream_status=status,
        upstream_request_id=request_id,
        retry_after_seconds=retry_after_seconds(headers.get("retry-after")),
        secrets=secrets,
    )


def stream_error(
    provider: str, event: Mapping[str, Any], request_id: str | None, secrets: tuple[str, ...]
) -> UpstreamError:
    """An `error` event inside a 200 stream (`{"type": "error", "error": {type, message}}`)."""
    kind, message = _error_fields(event)
    return UpstreamError(
        _ERROR_TYPES.get(kind, UpstreamFailure.SERVER_ERROR),
        f"error event in stream: {kind or 'unknown'}: {message}",
        provider=provider,
        upstream_request_id=request_id,
        secrets=secrets,
    )


def _error_fields(body: object) -> tuple[str, str]:
    """(`error.type`, `error.message`) of an Anthropic error body or event, "" when absent."""
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping):
            kind, message = inner.get("type"), inner.get("message")
            return (kind if isinstance(kind, str) else "", message if isinstance(message, str) else "")
    return "", ""


def _body_request_id(body: object) -> str | None:
    if isinstance(body, Mapping) and isinstance(body.get("request_id"), str):
        return body["request_id"]
    return None


__all__ = ["error_from_response", "stream_error"]
