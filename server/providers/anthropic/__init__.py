"""Provider for Anthropic's Messages API (Claude), and the Anthropic-compatible
endpoints other vendors offer.

    POST {base_url}/v1/messages   stream: true
    header x-api-key: {api_key}, anthropic-version: 2023-06-01

`base_url` is the API root without `/v1` (e.g. https://api.anthropic.com).
The key goes in `x-api-key`, the header the Messages API documents and the
one compatible endpoints accept (the SDK 2.x sends `Authorization: Bearer`).
API version 2023-06-01 is the one under which `temperature` and `top_p`
still exist (2026-10-21 removed them); an operator can pin another with an
`anthropic-version` entry in the upstream's headers.

The translations are wire.py's pure functions; this module only moves
bytes: one pooled HTTP client per upstream (providers/http.py), one JSON
decode per SSE event. Unary calls are the stream folded by the core. An
answer is complete only with `message_stop`: a stream that ends before it
is STREAM_INTERRUPTED, whatever the socket said.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import orjson

from aigc.v1 import model_pb2
from server.errors import UpstreamError, UpstreamFailure
from server.providers.anthropic import errors, wire
from server.providers.base import ALL_CAPABILITIES, Chunk, ProviderRequest, RemoteProvider, merge_chunks
from server.providers.http import SseStream

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = wire.DEFAULT_MAX_TOKENS

# What an event of the wrong shape raises when the translator reads it.
_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError)


class AnthropicProvider(RemoteProvider):
    """RemoteProvider's constructor; see the module docstring."""

    reserved_vendor_keys = wire.RESERVED_KEYS
    # No raw completion: a completion is a single user turn.
    supported_capabilities = ALL_CAPABILITIES - {model_pb2.CAPABILITY_RAW_COMPLETION}

    def auth_headers(self, key: str) -> dict[str, str]:
        # A configured `anthropic-version` (any spelling) is sent as configured, once.
        configured = {name.lower() for name in self.default_headers}
        headers = {} if "anthropic-version" in configured else {"anthropic-version": API_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    def validate(self, request: ProviderRequest) -> Mapping[str, str]:
        return wire.problems(request)

    @contextlib.asynccontextmanager
    async def stream(self, request: ProviderRequest) -> AsyncIterator[AsyncIterator[Chunk]]:
        body = wire.chat_body(request)
        include_reasoning = request.chat is not None and request.chat.reasoning.include_reasoning
        translator = wire.StreamTranslator(include_reasoning=include_reasoning)
        async with self.post_sse(
            "/v1/messages",
            body,
            on_error=self._error,
            deadline=request.deadline,
            request_id_header="request-id",
        ) as events:
            chunks = self._chunks(events, translator)
            try:
                yield chunks
            finally:
                await chunks.aclose()

    async def _chunks(self, events: SseStream, translator: wire.StreamTranslator) -> AsyncIterator[Chunk]:
        request_id = events.request_id
        async for batch in events.batches():
            chunks: list[Chunk] = []
            try:
                for event in batch:
                    try:
                        data = orjson.loads(event.data)
                    except ValueError as exc:
                        raise self._malformed(f"unparseable stream event: {exc}", request_id) from exc
                    if not isinstance(data, dict):
                        raise self._malformed(
                            f"stream event is a {type(data).__name__}, not an object", request_id
                        )
                    if data.get("type") == "error" or event.name == "error":
                        raise errors.stream_error(self.name, data, request_id, self.secrets)
                    try:
                        chunk = translator.feed(data)
                    except _SHAPE_ERRORS as exc:
                        raise self._malformed(
                            f"unexpected {data.get('type')!r} event: {exc!r}", request_id
                        ) from exc
                    if chunk is not None:
                        chunks.append(chunk)
                    if translator.finished:
                        break
            except UpstreamError:
                # What arrived before the failure still reaches the caller.
                if chunks:
                    yield merge_chunks(chunks)
                raise
            if chunks:
                yield merge_chunks(chunks)
            if translator.finished:
                return
        raise UpstreamError(
            UpstreamFailure.STREAM_INTERRUPTED,
            "the stream ended before message_stop",
            provider=self.name,
            upstream_request_id=request_id,
        )

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return errors.error_from_response(self.name, status, headers, body, self.secrets)

    def _malformed(self, message: str, request_id: str | None) -> UpstreamError:
        return UpstreamError(
            UpstreamFailure.MALFORMED_RESPONSE,
            message,
            provider=self.name,
            upstream_request_id=request_id,
            secrets=self.secrets,
        )


__all__ = ["API_VERSION", "DEFAULT_MAX_TOKENS", "AnthropicProvider"]
