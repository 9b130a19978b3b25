"""Provider for the OpenAI wire protocol: OpenAI itself and every compatible
server (DeepSeek, Qwen, ERNIE via Qianfan v2, GLM, Kimi, Ollama, vLLM, and the
llama.cpp server behind the built-in `local` provider).

Built on the official `openai` SDK: one `AsyncOpenAI` client per upstream,
reused across requests. The SDK's own retries (connection errors, 408, 429,
5xx, before any byte of a response) are the only retry layer for it.

Unary calls are the stream folded (Provider.generate): no `generate`
override here, so a cancelled caller closes a stream, which stops the upstream.

Usage comes from `stream_options.include_usage` (a last chunk with empty
`choices`); an upstream that ignores that option reports no usage, and we
return `usage=None` rather than counting tokens ourselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import openai

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

_FINISH = {
    "stop": Finish.STOP,
    "length": Finish.MAX_TOKENS,
    "content_filter": Finish.CONTENT_FILTER,
}

# Error codes/types in OpenAI-style error bodies that say more than the status.
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error", "string_above_max_length"}
_FILTER_CODES = {"content_filter", "content_policy_violation", "data_inspection_failed"}

# What a chunk of the wrong shape raises when we read it (the SDK builds
# chunks without validating them).
_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError)


class OpenAICompatProvider(RemoteProvider[openai.AsyncOpenAI]):
    """RemoteProvider's constructor, plus `trust_env`.

    trust_env=False makes the client ignore the environment (HTTP(S)_PROXY,
    ALL_PROXY, NO_PROXY, SSL_CERT_FILE, .netrc): the `local` provider sets it,
    so loopback traffic to llama.cpp never goes through a proxy, whatever
    NO_PROXY says.
    """

    def __init__(self, name: str, *, trust_env: bool = True, **options: Any) -> None:
        super().__init__(name, **options)
        self.trust_env = trust_env

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            # The SDK refuses an empty key; keyless servers (Ollama, vLLM) ignore it.
            api_key=self.api_key or "unused",
            max_retries=self.max_retries,
            timeout=self.timeout_seconds,
            default_headers=self.default_headers,
            # None: the SDK's own client, which reads proxies from the environment.
            http_client=None if self.trust_env else openai.DefaultAsyncHttpxClient(trust_env=False),
        )

    async def stream(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        deadline = deadline_for(request)
        body = self._body(request) | {"stream": True, "stream_options": {"include_usage": True}}
        try:
            async with asyncio.timeout_at(deadline):
                if request.messages is not None:
                    upstream = await self.client.chat.completions.create(**body)
                else:
                    upstream = await self.client.completions.create(**body)
        except openai.OpenAIError as exc:
            raise self._map(exc) from exc
        except TimeoutError as exc:
            raise self._deadline_passed(request) from exc
        request_id = upstream.response.headers.get("x-request-id")
        finished = False
        # `async with` closes the HTTP response however we leave - including
        # when the caller cancels and this generator is closed mid-stream, so
        # the upstream stops generating instead of running on unobserved.
        async with upstream:
            while True:
                try:
                    event = await next_before(upstream, deadline)
                except StopAsyncIteration:
                    break
                except openai.OpenAIError as exc:
                    raise self._map(exc, streaming=True, request_id=request_id) from exc
                except TimeoutError as exc:
                    raise self._deadline_passed(request) from exc
                except ValueError as exc:  # a chunk that is not JSON
                    raise self._malformed(f"unparseable stream chunk: {exc}", request_id) from exc
                try:
                    chunk = _chunk(event)
                except _SHAPE_ERRORS as exc:
                    raise self._malformed(f"unexpected chunk shape: {exc!r}", request_id) from exc
                finished = finished or chunk.finish is not None
                if chunk.text or chunk.finish or chunk.usage:
                    yield chunk
        if not finished and not is_event_stream(upstream.response.headers):
            raise self._malformed(
                f"expected an event stream, got {upstream.response.headers.get('content-type')!r}",
                request_id,
            )
        if not finished:
            # The SDK ends quietly on a clean close without `[DONE]`; a stream
            # without a finish reason was cut, whatever the socket said.
            raise UpstreamError(
                UpstreamFailure.STREAM_INTERRUPTED,
                "the stream ended without a finish reason",
                provider=self.name,
                upstream_request_id=request_id,
            )

    def _body(self, request: GenerateRequest) -> dict[str, Any]:
        s = request.sampling
        body: dict[str, Any] = {"model": request.upstream_model}
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        else:
            body["prompt"] = request.prompt
        optional = {
            "max_tokens": s.max_output_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
            "stop": list(s.stop_sequences) or None,
            "user": request.user_id or None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if request.vendor_params:
            body["extra_body"] = dict(request.vendor_params)
        body["timeout"] = self.request_timeout(request)
        return body

    def _malformed(self, message: str, request_id: str | None = None) -> UpstreamError:
        return UpstreamError(
            UpstreamFailure.MALFORMED_RESPONSE,
            message,
            provider=self.name,
            upstream_request_id=request_id,
            secrets=self.secrets,
        )

    def _deadline_passed(self, request: GenerateRequest) -> UpstreamError:
        return UpstreamError(
            UpstreamFailure.TIMEOUT,
            f"no answer within the caller's deadline ({request.timeout:.3g}s)",
            provider=self.name,
        )

    def _map(
        self, exc: openai.OpenAIError, *, streaming: bool = False, request_id: str | None = None
    ) -> UpstreamError:
        """The SDK's exceptions, classified. Codes and reasons live in errors.py."""
        secrets = self.secrets
        if isinstance(exc, openai.APITimeoutError):
            return UpstreamError(
                UpstreamFailure.TIMEOUT,
                f"no answer within {self.timeout_seconds:.3g}s",
                provider=self.name,
                upstream_request_id=request_id,
            )
        if isinstance(exc, openai.APIConnectionError):
            failure = UpstreamFailure.STREAM_INTERRUPTED if streaming else UpstreamFailure.UNREACHABLE
            cause = exc.__cause__ or exc
            return UpstreamError(
                failure,
                f"{type(cause).__name__}: {cause}",
                provider=self.name,
                upstream_request_id=request_id,
                secrets=secrets,
            )
        if isinstance(exc, openai.APIStatusError):
            code = _error_code(exc.body)
            if code in _CONTEXT_CODES:
                failure = UpstreamFailure.CONTEXT_TOO_LONG
            elif code in _FILTER_CODES:
                failure = UpstreamFailure.CONTENT_FILTERED
            else:
                failure = failure_for_http_status(exc.status_code)
            return UpstreamError(
                failure,
                _error_message(exc),
                provider=self.name,
                upstream_status=exc.status_code,
                upstream_request_id=exc.request_id,
                retry_after_seconds=retry_after_seconds(exc.response.headers.get("retry-after")),
                secrets=secrets,
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return self._malformed(str(exc), request_id)
        if isinstance(exc, openai.APIError) and streaming:
            # An error object inside an SSE stream (the HTTP status was 200).
            code = _error_code({"error": exc.body})
            if code in _CONTEXT_CODES:
                failure = UpstreamFailure.CONTEXT_TOO_LONG
            elif code in _FILTER_CODES:
                failure = UpstreamFailure.CONTENT_FILTERED
            elif code in ("rate_limit_exceeded", "rate_limit_error"):
                failure = UpstreamFailure.RATE_LIMITED
            else:
                failure = UpstreamFailure.SERVER_ERROR
            return UpstreamError(
                failure,
                f"error in stream: {exc.message}",
                provider=self.name,
                upstream_request_id=request_id,
                secrets=secrets,
            )
        return UpstreamError(
            UpstreamFailure.SERVER_ERROR,
            str(exc),
            provider=self.name,
            upstream_request_id=request_id,
            secrets=secrets,
        )


def _chunk(event: Any) -> Chunk:
    """One SSE event (chat or legacy completion) as a Chunk."""
    choice = event.choices[0] if event.choices else None
    text, finish = None, None
    if choice is not None:
        text = getattr(choice, "text", None)
        if text is None:
            delta = getattr(choice, "delta", None)
            text = delta.content if delta is not None else None
        if choice.finish_reason:
            finish = _FINISH.get(choice.finish_reason, Finish.OTHER)
    return Chunk(text=text or "", finish=finish, usage=_usage(event.usage), response_id=event.id or "")


def _usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    return Usage(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0)


def _error_code(body: object) -> str:
    """The `code` or `type` of an OpenAI-style error body, lower-cased."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            for key in ("code", "type"):
                value = inner.get(key)
                if isinstance(value, str) and value:
                    return value.lower()
    return ""


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return f"HTTP {exc.status_code}: {inner['message']}"
    if isinstance(body, str) and body:
        return f"HTTP {exc.status_code}: {body[:500]}"
    return f"HTTP {exc.status_code}"


__all__ = ["OpenAICompatProvider"]
