"""Provider for the OpenAI wire protocol: OpenAI itself and every compatible
server (DeepSeek, Qwen, ERNIE via Qianfan v2, GLM, Kimi, Ollama, vLLM, and the
llama.cpp server behind the built-in `local` provider).

Built on the official `openai` SDK: one `AsyncOpenAI` client per upstream,
reused across requests. The SDK's own retries (connection errors, 408, 429,
5xx, before any byte of a response) are the only retry layer in the service.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import openai

from server.errors import UpstreamError, UpstreamFailure, failure_for_http_status
from server.providers.base import (
    Chunk,
    Finish,
    GenerateRequest,
    Generation,
    Provider,
    Usage,
)

_FINISH = {
    "stop": Finish.STOP,
    "length": Finish.MAX_TOKENS,
    "content_filter": Finish.CONTENT_FILTER,
}

# Error codes/types in OpenAI-style error bodies that say more than the status.
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error", "string_above_max_length"}
_FILTER_CODES = {"content_filter", "content_policy_violation", "data_inspection_failed"}


class OpenAICompatProvider(Provider):
    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str,
        max_retries: int = 2,
        timeout_seconds: float = 600.0,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self._base_url = base_url
        self._api_key = api_key
        self._max_retries = max_retries
        self._timeout = timeout_seconds
        self._default_headers = dict(default_headers or {})
        self._client: openai.AsyncOpenAI | None = None

    async def start(self) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=self._base_url,
            # The SDK refuses an empty key; keyless servers (Ollama, vLLM) ignore it.
            api_key=self._api_key or "unused",
            max_retries=self._max_retries,
            timeout=self._timeout,
            default_headers=self._default_headers,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            raise RuntimeError(f"provider {self.name} used before start()")
        return self._client

    async def generate(self, request: GenerateRequest) -> Generation:
        try:
            if request.messages is not None:
                chat = await self.client.chat.completions.create(**self._body(request))
                choice = chat.choices[0] if chat.choices else None
                text = (choice.message.content or "") if choice else ""
                finish_reason = choice.finish_reason if choice else None
                response_id, usage = chat.id, chat.usage
            else:
                completion = await self.client.completions.create(**self._body(request))
                choice = completion.choices[0] if completion.choices else None
                text = choice.text if choice else ""
                finish_reason = choice.finish_reason if choice else None
                response_id, usage = completion.id, completion.usage
        except openai.OpenAIError as exc:
            raise self._map(exc) from exc
        if choice is None:
            raise UpstreamError(
                UpstreamFailure.MALFORMED_RESPONSE, "response has no choices", provider=self.name
            )
        return Generation(
            text=text,
            finish=_FINISH.get(finish_reason or "", Finish.OTHER),
            usage=_usage(usage),
            response_id=response_id or "",
        )

    async def stream(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        body = self._body(request) | {"stream": True, "stream_options": {"include_usage": True}}
        try:
            if request.messages is not None:
                upstream = await self.client.chat.completions.create(**body)
            else:
                upstream = await self.client.completions.create(**body)
        except openai.OpenAIError as exc:
            raise self._map(exc) from exc
        # `async with` closes the HTTP response however we leave - including
        # when the caller cancels and this generator is closed mid-stream, so
        # the upstream stops generating instead of running on unobserved.
        async with upstream:
            try:
                async for event in upstream:
                    choice = event.choices[0] if event.choices else None
                    if choice is not None:
                        text = getattr(choice, "text", None)
                        if text is None:
                            text = choice.delta.content if choice.delta else None
                        finish = (
                            _FINISH.get(choice.finish_reason, Finish.OTHER) if choice.finish_reason else None
                        )
                    else:
                        text, finish = None, None
                    usage = _usage(event.usage)
                    if text or finish or usage:
                        yield Chunk(text=text or "", finish=finish, usage=usage, response_id=event.id or "")
            except openai.OpenAIError as exc:
                raise self._map(exc, streaming=True) from exc
            except ValueError as exc:  # a chunk that is not JSON
                raise UpstreamError(
                    UpstreamFailure.MALFORMED_RESPONSE,
                    f"unparseable stream chunk: {exc}",
                    provider=self.name,
                    secrets=(self._api_key,),
                ) from exc

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
        if request.timeout is not None:
            body["timeout"] = request.timeout
        return body

    def _map(self, exc: openai.OpenAIError, *, streaming: bool = False) -> UpstreamError:
        """The SDK's exceptions, classified. Codes and reasons live in errors.py."""
        secrets = (self._api_key,)
        if isinstance(exc, openai.APITimeoutError):
            return UpstreamError(UpstreamFailure.TIMEOUT, "no answer in time", provider=self.name)
        if isinstance(exc, openai.APIConnectionError):
            failure = UpstreamFailure.STREAM_INTERRUPTED if streaming else UpstreamFailure.UNREACHABLE
            cause = exc.__cause__ or exc
            return UpstreamError(
                failure, f"{type(cause).__name__}: {cause}", provider=self.name, secrets=secrets
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
                retry_after_seconds=_retry_after(exc.response.headers.get("retry-after")),
                secrets=secrets,
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return UpstreamError(
                UpstreamFailure.MALFORMED_RESPONSE, str(exc), provider=self.name, secrets=secrets
            )
        if isinstance(exc, openai.APIError) and streaming:
            # An error event inside an SSE stream (the HTTP status was 200).
            failure = UpstreamFailure.SERVER_ERROR
            code = _error_code(exc.body)
            if code in _CONTEXT_CODES:
                failure = UpstreamFailure.CONTEXT_TOO_LONG
            elif code in _FILTER_CODES:
                failure = UpstreamFailure.CONTENT_FILTERED
            return UpstreamError(failure, exc.message, provider=self.name, secrets=secrets)
        return UpstreamError(UpstreamFailure.SERVER_ERROR, str(exc), provider=self.name, secrets=secrets)


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


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


__all__ = ["OpenAICompatProvider"]
