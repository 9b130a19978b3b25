"""Provider for the OpenAI wire protocol: OpenAI itself and every compatible
server (DeepSeek, Qwen, ERNIE via Qianfan v2, GLM, Kimi, Ollama, vLLM, and the
llama.cpp server behind the built-in `local` provider).

    POST {base_url}/chat/completions   (chat)        stream: true, include_usage
    POST {base_url}/completions        (raw completion, models with CAPABILITY_RAW_COMPLETION)
    POST {base_url}/embeddings         (embeddings, unary JSON; embeddings.py)
    header authorization: Bearer {api_key}

The translations are wire.py's pure functions; this module only moves
bytes: one pooled HTTP client per upstream (providers/http.py), one JSON
decode per SSE event. Unary calls are the stream folded by the core.

Usage comes from `stream_options.include_usage` (a last chunk with empty
`choices`); an upstream that ignores that option reports no usage, and the
answer has none rather than a count of our own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from server.errors import UpstreamError, UpstreamFailure
from server.providers.base import SHAPE_ERRORS, Chunk, ProviderRequest, RemoteProvider, merged_batches
from server.providers.embeddings import EmbeddingRequest, Embeddings
from server.providers.http import SseEvent, SseStream
from server.providers.openai import embeddings, wire

# OpenAI's end marker: the last event of a stream.
_DONE = b"[DONE]"


class OpenAICompatProvider(RemoteProvider):
    """RemoteProvider's constructor, plus `max_tokens_param` and `reasoning_in_history`
    (see catalog.Upstream)."""

    reserved_vendor_keys = wire.RESERVED_KEYS
    reserved_embedding_keys = embeddings.RESERVED_KEYS

    def __init__(
        self,
        name: str,
        *,
        max_tokens_param: str = "max_tokens",
        reasoning_in_history: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        self.max_tokens_param = max_tokens_param
        self.reasoning_in_history = reasoning_in_history

    def validate(self, request: ProviderRequest) -> Mapping[str, str]:
        chat = request.chat
        if chat is not None and chat.reasoning.HasField("budget_tokens"):
            why = "this provider takes an effort level (reasoning.effort), not a budget"
            return {"reasoning.budget_tokens": why}
        return {}

    def chat_body(self, request: ProviderRequest) -> dict[str, Any]:
        """The chat request body; the local provider adjusts it for llama.cpp."""
        return wire.chat_body(
            request, max_tokens_param=self.max_tokens_param, reasoning_in_history=self.reasoning_in_history
        )

    @contextlib.asynccontextmanager
    async def stream(self, request: ProviderRequest) -> AsyncIterator[AsyncIterator[Chunk]]:
        if request.prompt is not None:
            path, body = "/completions", wire.completion_body(request)
            include_reasoning = False
        else:
            assert request.chat is not None
            path, body = "/chat/completions", self.chat_body(request)
            include_reasoning = request.chat.reasoning.include_reasoning
        translator = wire.StreamTranslator(include_reasoning=include_reasoning)
        async with self.post_sse(
            path, body, on_error=self._error, deadline=request.deadline, request_id_header="x-request-id"
        ) as events:
            async with contextlib.aclosing(self._chunks(events, translator)) as chunks:
                yield chunks

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        answer, request_id = await self.post_json(
            "/embeddings",
            embeddings.embeddings_body(request),
            on_error=self._error,
            deadline=request.deadline,
            request_id_header="x-request-id",
        )
        try:
            return embeddings.parse_embeddings(answer, len(request.inputs))
        except SHAPE_ERRORS as exc:
            raise self.malformed(f"unexpected embeddings answer: {exc}", request_id) from exc

    def _chunks(self, events: SseStream, translator: wire.StreamTranslator) -> AsyncIterator[Chunk]:
        request_id = events.request_id

        def translate(event: SseEvent) -> Chunk | None:
            if event.data == _DONE:
                return None
            data = self.event_object(event, "stream chunk", request_id)
            if "error" in data:
                raise wire.stream_error(self.name, data, request_id, self.secrets)
            try:
                return translator.feed(data)
            except SHAPE_ERRORS as exc:
                raise self.malformed(f"unexpected chunk shape: {exc!r}", request_id) from exc

        def end() -> None:
            if not translator.finished:
                # A clean close without a finish reason: the stream was cut,
                # whatever the socket said.
                raise self.upstream_error(
                    UpstreamFailure.STREAM_INTERRUPTED, "the stream ended without a finish reason", request_id
                )

        return merged_batches(events, translate, end, stop=lambda event: event.data == _DONE)

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return wire.error_from_response(self.name, status, headers, body, self.secrets)


__all__ = ["OpenAICompatProvider"]
