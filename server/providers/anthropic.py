"""Native provider for Anthropic's Messages API (Claude).

Built on the official `anthropic` SDK (Stainless-built like `openai`): one
`AsyncAnthropic` client per provider, reused; its retries (connection errors,
408, 409, 429, 5xx and 529, honouring Retry-After) are the only retry layer.
`base_url` is the API root without `/v1` (e.g. https://api.anthropic.com); the
SDK sends its `anthropic-version` and POSTs to `/v1/messages`. The
key is always passed explicitly, so the SDK never falls back to
ANTHROPIC_API_KEY or a credentials profile on disk; it goes in `x-api-key`
(see `_Client`).

Mapping to the unified shape:
- system messages become the top-level `system` (joined with blank lines);
  a completion (`prompt`) is one user message.
- `max_tokens` is required by Anthropic: when the caller sets no
  `max_output_tokens` we send DEFAULT_MAX_TOKENS (1024).
- `temperature` and `top_p` are sent as body fields (see `_body`); `seed`,
  `presence_penalty` and `frequency_penalty` do not exist in the Messages
  API and are not sent; `user_id` goes to `metadata.user_id`.
- Unary calls are the stream folded (Provider.generate), so a caller that
  goes away closes a stream: `messages.create` is always called with stream=True.
- Usage: prompt tokens = input_tokens + cache_creation_input_tokens +
  cache_read_input_tokens (Anthropic counts cached tokens separately);
  completion tokens = output_tokens, from the cumulative usage on
  `message_delta`. A stream without it reports usage=None.
- A stream is finished only by `message_stop`; a stream that ends before it
  is STREAM_INTERRUPTED. `error` events inside a 200 stream are classified by
  their `error.type`, like error bodies.
- A prompt over the context window comes back as a 400 invalid_request_error
  with only a prose message: it is classified BAD_REQUEST (we do not parse
  messages); a 413 `request_too_large` is CONTEXT_TOO_LONG.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2

from server.errors import UpstreamError, UpstreamFailure, failure_for_http_status
from server.providers.base import (
    Chunk,
    Finish,
    GenerateRequest,
    RemoteProvider,
    Usage,
    deadline_for,
    is_event_stream,
    next_before,
    retry_after_seconds,
)

DEFAULT_MAX_TOKENS = 1024

_FINISH = {
    "end_turn": Finish.STOP,
    "stop_sequence": Finish.STOP,
    "max_tokens": Finish.MAX_TOKENS,
    "model_context_window_exceeded": Finish.MAX_TOKENS,
    "refusal": Finish.CONTENT_FILTER,
}

# `error.type` of Anthropic error bodies and stream error events. It decides
# before the HTTP status does: inside a stream the status is 200.
_ERROR_TYPES = {
    "invalid_request_error": UpstreamFailure.BAD_REQUEST,
    "authentication_error": UpstreamFailure.AUTHENTICATION,
    "permission_error": UpstreamFailure.AUTHENTICATION,
    # Our account cannot pay: like a bad key, the operator's problem, not the caller's.
    "billing_error": UpstreamFailure.AUTHENTICATION,
    "not_found_error": UpstreamFailure.MODEL_NOT_FOUND,
    "request_too_large": UpstreamFailure.CONTEXT_TOO_LONG,
    "rate_limit_error": UpstreamFailure.RATE_LIMITED,
    "timeout_error": UpstreamFailure.TIMEOUT,
    "api_error": UpstreamFailure.SERVER_ERROR,
    "overloaded_error": UpstreamFailure.SERVER_ERROR,
}

_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError)


class AnthropicProvider(RemoteProvider[anthropic.AsyncAnthropic]):
    def _new_client(self) -> anthropic.AsyncAnthropic:
        return _Client(
            api_key=self.api_key or "unused",
            base_url=self.base_url,
            max_retries=self.max_retries,
            timeout=self.timeout_seconds,
            default_headers=self.default_headers,
        )

    async def stream(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        deadline = deadline_for(request)
        try:
            async with asyncio.timeout_at(deadline):
                upstream = await self.client.messages.create(**self._body(request), stream=True)
        except anthropic.AnthropicError as exc:
            raise self._map(exc) from exc
        except TimeoutError as exc:
            raise self._deadline_passed(request) from exc
        request_id = upstream.response.headers.get("request-id")
        response_id, input_tokens = "", 0
        finish: Finish | None = None
        final_usage: Any = None
        # `async with` closes the HTTP response however we leave, including a
        # caller's cancel (this generator closed mid-stream).
        async with upstream:
            while True:
                try:
                    event = await next_before(upstream, deadline)
                except StopAsyncIteration:
                    break
                except anthropic.AnthropicError as exc:
                    raise self._map(exc, request_id=request_id) from exc
                except TimeoutError as exc:
                    raise self._deadline_passed(request) from exc
                except httpx2.TimeoutException as exc:
                    raise self._error(
                        UpstreamFailure.TIMEOUT, f"stream stalled: {exc!r}", request_id
                    ) from exc
                except httpx2.TransportError as exc:  # the SDK lets these through mid-stream
                    raise self._error(
                        UpstreamFailure.STREAM_INTERRUPTED, f"{type(exc).__name__}: {exc}", request_id
                    ) from exc
                except ValueError as exc:  # an event whose data is not JSON
                    raise self._malformed(f"unparseable stream event: {exc}", request_id) from exc
                try:
                    if event.type == "message_start":
                        response_id = event.message.id or ""
                        input_tokens = _prompt_tokens(event.message.usage, event.message.usage.input_tokens)
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        if event.delta.text:
                            yield Chunk(text=event.delta.text, response_id=response_id)
                    elif event.type == "message_delta":
                        finish = _FINISH.get(event.delta.stop_reason or "", Finish.OTHER)
                        final_usage = event.usage
                    elif event.type == "message_stop":
                        if finish is None:
                            raise self._malformed("message_stop without a message_delta", request_id)
                        usage = None
                        if final_usage is not None:
                            # message_delta's usage is cumulative; input_tokens may be
                            # absent there (then message_start's count stands).
                            prompt = getattr(final_usage, "input_tokens", None)
                            usage = Usage(
                                prompt_tokens=input_tokens
                                if prompt is None
                                else _prompt_tokens(final_usage, prompt),
                                completion_tokens=final_usage.output_tokens or 0,
                            )
                        yield Chunk(finish=finish, usage=usage, response_id=response_id)
                        return
                except _SHAPE_ERRORS as exc:
                    raise self._malformed(f"unexpected {event.type!r} event: {exc!r}", request_id) from exc
        if not is_event_stream(upstream.response.headers):
            raise self._malformed(
                f"expected an event stream, got {upstream.response.headers.get('content-type')!r}",
                request_id,
            )
        raise self._error(
            UpstreamFailure.STREAM_INTERRUPTED, "the stream ended before message_stop", request_id
        )

    def _body(self, request: GenerateRequest) -> dict[str, Any]:
        s = request.sampling
        if request.messages is not None:
            system = "\n\n".join(m.content for m in request.messages if m.role == "system")
            messages = [
                {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
            ]
        else:
            system, messages = "", [{"role": "user", "content": request.prompt or ""}]
        body: dict[str, Any] = {
            "model": request.upstream_model,
            "messages": messages,
            "max_tokens": s.max_output_tokens or DEFAULT_MAX_TOKENS,
            "timeout": self.request_timeout(request),
        }
        optional = {
            "system": system or None,
            "stop_sequences": list(s.stop_sequences) or None,
            "metadata": {"user_id": request.user_id} if request.user_id else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        # The SDK (API version 2026-10-21) has no named temperature/top_p
        # parameters; they go as plain body fields, so a model that rejects
        # them answers 400 instead of the caller's setting vanishing silently.
        sampling = {"temperature": s.temperature, "top_p": s.top_p}
        extra = {k: v for k, v in sampling.items() if v is not None} | dict(request.vendor_params)
        if extra:
            body["extra_body"] = extra
        return body

    def _error(self, failure: UpstreamFailure, message: str, request_id: str | None = None) -> UpstreamError:
        return UpstreamError(
            failure, message, provider=self.name, upstream_request_id=request_id, secrets=self.secrets
        )

    def _malformed(self, message: str, request_id: str | None = None) -> UpstreamError:
        return self._error(UpstreamFailure.MALFORMED_RESPONSE, message, request_id)

    def _deadline_passed(self, request: GenerateRequest) -> UpstreamError:
        return self._error(
            UpstreamFailure.TIMEOUT, f"no answer within the caller's deadline ({request.timeout:.3g}s)"
        )

    def _map(self, exc: anthropic.AnthropicError, *, request_id: str | None = None) -> UpstreamError:
        """The SDK's exceptions, classified. Codes and reasons live in errors.py."""
        if isinstance(exc, anthropic.APITimeoutError):
            return self._error(
                UpstreamFailure.TIMEOUT, f"no answer within {self.timeout_seconds:.3g}s", request_id
            )
        if isinstance(exc, anthropic.APIConnectionError):
            cause = exc.__cause__ or exc
            return self._error(UpstreamFailure.UNREACHABLE, f"{type(cause).__name__}: {cause}", request_id)
        if isinstance(exc, anthropic.APIStatusError):
            in_stream = exc.status_code < 400  # an `error` event inside a 200 stream
            failure = _ERROR_TYPES.get(exc.type or "")
            if failure is None:
                failure = (
                    UpstreamFailure.SERVER_ERROR if in_stream else failure_for_http_status(exc.status_code)
                )
            message = exc.api_message or str(exc.body or "")[:500]
            return UpstreamError(
                failure,
                f"error event in stream: {message}" if in_stream else f"HTTP {exc.status_code}: {message}",
                provider=self.name,
                upstream_status=None if in_stream else exc.status_code,
                upstream_request_id=exc.request_id or request_id,
                retry_after_seconds=retry_after_seconds(exc.response.headers.get("retry-after")),
                secrets=self.secrets,
            )
        if isinstance(exc, anthropic.APIResponseValidationError):
            return self._malformed(str(exc), request_id)
        return self._error(UpstreamFailure.SERVER_ERROR, f"{type(exc).__name__}: {exc}", request_id)


class _Client(anthropic.AsyncAnthropic):
    """The SDK, sending the key as `x-api-key`.

    SDK 2.10 sends an API key as `Authorization: Bearer`; the Messages API
    documents `x-api-key`, and Anthropic-compatible endpoints of other vendors
    accept only that, so we keep to the documented header.
    """

    @property
    def _api_key_auth(self) -> dict[str, str]:
        return {"x-api-key": self.api_key} if self.api_key else {}


def _prompt_tokens(usage: Any, input_tokens: int | None) -> int:
    cached = (getattr(usage, "cache_creation_input_tokens", None) or 0) + (
        getattr(usage, "cache_read_input_tokens", None) or 0
    )
    return (input_tokens or 0) + cached


__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicProvider"]
