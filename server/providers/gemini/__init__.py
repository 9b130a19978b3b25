"""Provider for Google's Generative Language API (Gemini), v1beta.

    POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse
    POST {base_url}/v1beta/models/{model}:embedContent / :batchEmbedContents   (embeddings.py)
    header x-goog-api-key: {api_key}

Only the streaming method: unary calls are the stream folded by the core,
so a caller that goes away closes the stream and Gemini stops generating.
The translations are wire.py's pure functions; this module only moves
bytes: the pooled HTTP client of providers/http.py, one JSON decode per SSE
event. It does not retry: server/core/retry.py is the one retry layer, and
the RetryInfo delay in Gemini's error details is handed to it as
`retry_after_seconds`.

Why not the `google-genai` SDK: it pulls in google-auth, requests,
cryptography, websockets and tenacity for the one JSON endpoint used here,
retries in a layer of its own, and builds a model object per chunk; what
we classify on (HTTP status, the google.rpc `status`, ErrorInfo reasons and
RetryInfo in `error.details`, the end of the SSE body) is plain JSON and
HTTP, read here directly.

Gemini sends no request id header; the body's `responseId` is the
response id. A stream has no end marker: it is complete when a chunk
carried a finishReason and the body ended properly; otherwise it was cut.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from aigc.v1 import model_pb2
from server.errors import UpstreamError, UpstreamFailure
from server.providers.base import (
    ALL_CAPABILITIES,
    SHAPE_ERRORS,
    Chunk,
    ProviderRequest,
    RemoteProvider,
    merged_batches,
)
from server.providers.embeddings import EmbeddingRequest, Embeddings
from server.providers.gemini import embeddings, errors, wire
from server.providers.http import SseEvent, SseStream


class GeminiProvider(RemoteProvider):
    """RemoteProvider's constructor; the key goes in `x-goog-api-key`."""

    reserved_vendor_keys = wire.RESERVED_KEYS
    reserved_embedding_keys = embeddings.RESERVED_KEYS
    # Gemini has no raw completion: a prompt is sent as one user turn.
    supported_capabilities = ALL_CAPABILITIES - {model_pb2.CAPABILITY_RAW_COMPLETION}

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key} if key else {}

    def validate(self, request: ProviderRequest) -> Mapping[str, str]:
        return wire.problems(request)

    @contextlib.asynccontextmanager
    async def stream(self, request: ProviderRequest) -> AsyncIterator[AsyncIterator[Chunk]]:
        include_reasoning = request.chat is not None and request.chat.reasoning.include_reasoning
        translator = wire.StreamTranslator(include_reasoning=include_reasoning)
        async with self.post_sse(
            wire.stream_path(request.upstream_model),
            wire.request_body(request),
            on_error=self._error,
            deadline=request.deadline,
            params={"alt": "sse"},
        ) as events:
            async with contextlib.aclosing(self._chunks(events, translator)) as chunks:
                yield chunks

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        answer, _ = await self.post_json(
            embeddings.embed_path(request.upstream_model, batch=len(request.inputs) > 1),
            embeddings.embed_body(request),
            on_error=self._error,
            deadline=request.deadline,
        )
        try:
            return embeddings.parse_embeddings(answer, len(request.inputs))
        except SHAPE_ERRORS as exc:
            raise self.malformed(f"unexpected embeddings answer: {exc}") from exc

    def _chunks(self, events: SseStream, translator: wire.StreamTranslator) -> AsyncIterator[Chunk]:
        def translate(event: SseEvent) -> Chunk | None:
            data = self.event_object(event, "chunk")
            if "error" in data:
                raise errors.stream_error(self.name, data, self.secrets)
            blocked = wire.block_reason(data)
            if blocked:
                raise self.upstream_error(UpstreamFailure.CONTENT_FILTERED, f"prompt blocked: {blocked}")
            try:
                return translator.feed(data)
            except SHAPE_ERRORS as exc:
                raise self.malformed(f"unexpected chunk shape: {exc!r}") from exc

        def end() -> Chunk:
            if not translator.finished:
                # A clean close without a finishReason: the stream was cut,
                # whatever the socket said.
                raise self.upstream_error(
                    UpstreamFailure.STREAM_INTERRUPTED, "the stream ended without a finishReason"
                )
            return translator.last()

        # Gemini has no end marker: the stream ends when the body does.
        return merged_batches(events, translate, end)

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return errors.error_from_response(self.name, status, headers, body, self.secrets)


__all__ = ["GeminiProvider"]
