"""Native provider for Google's Generative Language API (Gemini), v1beta.

    POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse
    header x-goog-api-key: {api_key}

Only the streaming endpoint: unary calls are the stream folded
(Provider.generate), so a caller that goes away closes a stream.

Why httpx2 and not the official `google-genai` SDK: google-genai 3.3 pulls in
google-auth, requests, cryptography, websockets and tenacity for the one
JSON endpoint we need; it retries through tenacity in a layer of its own; and
what we classify on (HTTP status, the google.rpc `status`, ErrorInfo reasons
and RetryInfo in `error.details`, the cut of an SSE stream) is plain JSON and
plain HTTP that we read here directly. httpx2 is the HTTP client the openai
and anthropic SDKs already use (pinned in requirements.txt).

One `httpx2.AsyncClient` per provider, reused. Retries live here, in
`_send`: connection failures and 408/429/5xx answers are retried up to
`max_retries` times before any byte of a body was read, waiting the vendor's
Retry-After or RetryInfo delay (else exponential backoff), never past the
caller's deadline.

Mapping to the unified shape:
- system messages become `systemInstruction`, assistant is role `model`, a
  completion (`prompt`) is one user turn; `user_id` has no Gemini field.
- Usage: prompt = promptTokenCount; completion = candidatesTokenCount +
  thoughtsTokenCount (thinking tokens are generated and billed as output).
  A response without usageMetadata gives usage=None.
- A blocked prompt (promptFeedback.blockReason, no candidates) is
  CONTENT_FILTERED; a candidate stopped by SAFETY, RECITATION, ... finishes
  with Finish.CONTENT_FILTER.
- A stream has no end marker: it is complete when a chunk carried a
  finishReason and the HTTP body ended properly; otherwise it was cut.
- Gemini sends no request id header; the body's `responseId` is the response id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

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

_FINISH = {
    "STOP": Finish.STOP,
    "MAX_TOKENS": Finish.MAX_TOKENS,
    **{
        reason: Finish.CONTENT_FILTER
        for reason in ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY")
    },
}

# google.rpc canonical status names in Gemini error bodies; they decide
# before the HTTP status does.
_STATUSES = {
    "INVALID_ARGUMENT": UpstreamFailure.BAD_REQUEST,
    "FAILED_PRECONDITION": UpstreamFailure.BAD_REQUEST,
    "OUT_OF_RANGE": UpstreamFailure.BAD_REQUEST,
    "UNAUTHENTICATED": UpstreamFailure.AUTHENTICATION,
    "PERMISSION_DENIED": UpstreamFailure.AUTHENTICATION,
    "NOT_FOUND": UpstreamFailure.MODEL_NOT_FOUND,
    "RESOURCE_EXHAUSTED": UpstreamFailure.RATE_LIMITED,
    "DEADLINE_EXCEEDED": UpstreamFailure.TIMEOUT,
    "INTERNAL": UpstreamFailure.SERVER_ERROR,
    "UNAVAILABLE": UpstreamFailure.SERVER_ERROR,
}
# ErrorInfo reasons that override the status: a bad key is a 400 INVALID_ARGUMENT.
_AUTH_REASONS = {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED"}
_RETRYABLE = {408, 429, 500, 502, 503, 504}
_MAX_BACKOFF = 8.0
_MAX_SERVER_DELAY = 60.0  # a longer Retry-After goes back to the caller instead
_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError)


class GeminiProvider(RemoteProvider[httpx2.AsyncClient]):
    def _new_client(self) -> httpx2.AsyncClient:
        headers = dict(self.default_headers)
        if self.api_key:
            headers["x-goog-api-key"] = self.api_key
        return httpx2.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx2.Timeout(self.timeout_seconds, connect=min(self.timeout_seconds, 10.0)),
        )

    async def _close_client(self, client: httpx2.AsyncClient) -> None:
        await client.aclose()

    async def stream(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        deadline = deadline_for(request)
        url = f"/v1beta/models/{request.upstream_model}:streamGenerateContent"
        async with self._opening(request, deadline):
            response = await self._send(url, request, deadline)
        finish: Finish | None = None
        usage: Usage | None = None
        response_id = ""
        events = _sse_data(response)
        try:
            while True:
                try:
                    data = await next_before(events, deadline)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise self._deadline_passed(request) from exc
                except httpx2.TimeoutException as exc:
                    raise self._error(UpstreamFailure.TIMEOUT, f"stream stalled: {exc!r}") from exc
                except httpx2.TransportError as exc:
                    raise self._error(
                        UpstreamFailure.STREAM_INTERRUPTED, f"{type(exc).__name__}: {exc}"
                    ) from exc
                try:
                    body = json.loads(data)
                    if "error" in body:  # an error object inside the 200 stream
                        raise self._from_error_body(body, status=None, headers={}, in_stream=True)
                    _raise_for_block(body, self)
                    response_id = response_id or body.get("responseId", "")
                    text, chunk_finish = _candidate(body) if body.get("candidates") else ("", None)
                    usage = _usage(body) or usage
                except UpstreamError:
                    raise
                except _SHAPE_ERRORS as exc:
                    raise self._error(
                        UpstreamFailure.MALFORMED_RESPONSE, f"unreadable chunk: {exc!r}"
                    ) from exc
                finish = chunk_finish or finish
                if text:
                    yield Chunk(text=text, response_id=response_id)
        finally:
            await events.aclose()
            await response.aclose()
        if finish is None and not is_event_stream(response.headers):
            raise self._error(
                UpstreamFailure.MALFORMED_RESPONSE,
                f"expected an event stream, got {response.headers.get('content-type')!r}",
            )
        if finish is None:
            raise self._error(UpstreamFailure.STREAM_INTERRUPTED, "the stream ended without a finishReason")
        yield Chunk(finish=finish, usage=usage, response_id=response_id)

    # --- HTTP ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _opening(self, request: GenerateRequest, deadline: float | None) -> AsyncIterator[None]:
        """Bounds getting a response by the caller's deadline and classifies transport failures."""
        try:
            async with asyncio.timeout_at(deadline):
                yield
        except TimeoutError as exc:
            raise self._deadline_passed(request) from exc
        except httpx2.TimeoutException as exc:
            raise self._error(
                UpstreamFailure.TIMEOUT, f"no answer within {self.timeout_seconds:.3g}s"
            ) from exc
        except httpx2.TransportError as exc:
            raise self._error(UpstreamFailure.UNREACHABLE, f"{type(exc).__name__}: {exc}") from exc

    async def _send(self, url: str, request: GenerateRequest, deadline: float | None) -> httpx2.Response:
        """POSTs the request for an SSE stream, retrying what may pass; returns a 200
        response, body unread."""
        http_request = self.client.build_request(
            "POST",
            url,
            json=self._body(request),
            params={"alt": "sse"},
            timeout=self.request_timeout(request),
        )
        loop = asyncio.get_running_loop()
        for attempt in range(self.max_retries + 1):
            failure: Exception
            try:
                response = await self.client.send(http_request, stream=True)
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                failure, delay = exc, _backoff(attempt)
            else:
                if response.status_code == 200:
                    return response
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                error = self._from_error_body(_json_or_none(response), response.status_code, response.headers)
                if response.status_code not in _RETRYABLE:
                    raise error
                failure = error
                delay = _backoff(attempt) if error.retry_after_seconds is None else error.retry_after_seconds
            out_of_time = deadline is not None and loop.time() + delay >= deadline
            if attempt == self.max_retries or delay > _MAX_SERVER_DELAY or out_of_time:
                raise failure
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _body(self, request: GenerateRequest) -> dict[str, Any]:
        s = request.sampling
        body: dict[str, Any] = {}
        if request.messages is not None:
            system = "\n\n".join(m.content for m in request.messages if m.role == "system")
            body["contents"] = [
                {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
                for m in request.messages
                if m.role != "system"
            ]
            if system:
                body["systemInstruction"] = {"parts": [{"text": system}]}
        else:
            body["contents"] = [{"role": "user", "parts": [{"text": request.prompt or ""}]}]
        config = {
            "maxOutputTokens": s.max_output_tokens,
            "temperature": s.temperature,
            "topP": s.top_p,
            "stopSequences": list(s.stop_sequences) or None,
            "seed": s.seed,
            "presencePenalty": s.presence_penalty,
            "frequencyPenalty": s.frequency_penalty,
        }
        config = {k: v for k, v in config.items() if v is not None}
        if config:
            body["generationConfig"] = config
        body.update(request.vendor_params)
        return body

    # --- errors ---------------------------------------------------------------------------

    def _error(self, failure: UpstreamFailure, message: str, **fields: Any) -> UpstreamError:
        return UpstreamError(failure, message, provider=self.name, secrets=self.secrets, **fields)

    def _deadline_passed(self, request: GenerateRequest) -> UpstreamError:
        return self._error(
            UpstreamFailure.TIMEOUT, f"no answer within the caller's deadline ({request.timeout:.3g}s)"
        )

    def _from_error_body(
        self, body: Any, status: int | None, headers: Mapping[str, str], *, in_stream: bool = False
    ) -> UpstreamError:
        """Classifies a google.rpc-style error body: {"error": {code, message, status, details}}."""
        error = body.get("error") if isinstance(body, Mapping) else None
        error = error if isinstance(error, Mapping) else {}
        details = [d for d in error.get("details") or () if isinstance(d, Mapping)]
        reasons = {
            d.get("reason") for d in details if str(d.get("@type", "")).endswith("google.rpc.ErrorInfo")
        }
        failure = _STATUSES.get(str(error.get("status", "")))
        if reasons & _AUTH_REASONS:
            failure = UpstreamFailure.AUTHENTICATION
        elif (status is not None and status in (401, 403, 404, 408, 413, 429)) or failure is None:
            # The HTTP status is more specific for these (e.g. 413 is INVALID_ARGUMENT in the body).
            code = status if status is not None else error.get("code")
            failure = failure_for_http_status(code) if isinstance(code, int) else UpstreamFailure.SERVER_ERROR
        retry_after = retry_after_seconds(headers.get("retry-after"))
        if retry_after is None:
            retry_after = _retry_info(details)
        message = error.get("message") if isinstance(error.get("message"), str) else ""
        if not message and isinstance(body, str | bytes):
            message = str(body)[:500]
        prefix = "error in stream" if in_stream else f"HTTP {status}"
        return self._error(
            failure,
            f"{prefix}: {message or 'no error message'}",
            upstream_status=status,
            retry_after_seconds=retry_after,
        )


async def _sse_data(response: httpx2.Response) -> AsyncIterator[str]:
    """The `data` of each server-sent event (lines decoded incrementally as UTF-8,
    so a character split across reads arrives whole)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


def _raise_for_block(body: Mapping[str, Any], provider: GeminiProvider) -> None:
    reason = (body.get("promptFeedback") or {}).get("blockReason")
    if reason and not body.get("candidates"):
        raise provider._error(UpstreamFailure.CONTENT_FILTERED, f"prompt blocked: {reason}")


def _candidate(body: Mapping[str, Any]) -> tuple[str, Finish | None]:
    candidates = body["candidates"]
    if not candidates:
        raise ValueError("no candidates")
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
    reason = candidate.get("finishReason")
    return text, (_FINISH.get(reason, Finish.OTHER) if reason else None)


def _usage(body: Mapping[str, Any]) -> Usage | None:
    meta = body.get("usageMetadata")
    if not meta:
        return None
    completion = (meta.get("candidatesTokenCount") or 0) + (meta.get("thoughtsTokenCount") or 0)
    return Usage(prompt_tokens=int(meta.get("promptTokenCount") or 0), completion_tokens=int(completion))


def _retry_info(details: list[Mapping[str, Any]]) -> float | None:
    for detail in details:
        if str(detail.get("@type", "")).endswith(".RetryInfo"):
            match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _json_or_none(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _backoff(attempt: int) -> float:
    return min(_MAX_BACKOFF, 0.5 * 2**attempt) * (0.75 + random.random() / 2)


__all__ = ["GeminiProvider"]
