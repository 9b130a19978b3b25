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

from aigc.v1 import model_pb2
from server.errors import UpstreamError, UpstreamFailure
from server.providers.anthropic import errors, wire
from server.providers.base import (
    ALL_CAPABILITIES,
    SHAPE_ERRORS,
    Chunk,
    ProviderRequest,
    RemoteProvider,
    merged_batches,
)
from server.providers.http import SseEvent, SseStream

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = wire.DEFAULT_MAX_TOKENS


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
            async with contextlib.aclosing(self._chunks(events, translator)) as chunks:
                yield chunks

    def _chunks(self, events: SseStream, translator: wire.StreamTranslator) -> AsyncIterator[Chunk]:
        request_id = events.request_id

        def translate(event: SseEvent) -> Chunk | None:
            data = self.event_object(event, "stream event", request_id)
            if data.get("type") == "error" or event.name == "error":
                raise errors.stream_error(self.name, data, request_id, self.secrets)
            try:
                return translator.feed(data)
            except SHAPE_ERRORS as exc:
                raise self.malformed(f"unexpected {data.get('type')!r} event: {exc!r}", request_id) from exc

        def end() -> None:
            if not translator.finished:
                raise self.upstream_error(
                    UpstreamFailure.STREAM_INTERRUPTED, "the stream ended before message_stop", request_id
                )

        # message_stop ends the answer: nothing after it is read.
        return merged_batches(events, translate, end, stop=lambda _event: translator.finished)

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return errors.error_from_response(self.name, status, headers, body, self.secrets)


__all__ = ["API_VERSION", "DEFAULT_MAX_TOKENS", "AnthropicProvider"]
