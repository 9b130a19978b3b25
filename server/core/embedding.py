"""Embeddings in the core: validate -> route -> admit -> call in batches -> join.

    answer = await engine.embed(request, call)     # Engine.embed, server/core/engine.py

The same path as generation where it means the same: the caller's key may
use the model (Gate.check_model), its quotas admit the call and are charged
the tokens the vendor reported, the record (access line, metrics, spans)
names the model and provider, and a failed attempt is retried in the one
way server/core/retry.py decides (retry_delay), never past the deadline.

What differs, on purpose:
- Inputs beyond the provider's `max_embedding_inputs` are split into
  batches, called one after another (a vendor's rate limit sees one call at
  a time), and the vectors joined back in input order.
- No fallback to another model: vectors of two models live in different
  spaces, and a caller's index would silently mix them.
- The tokens reserved against a key's tokens_per_minute until the usage is
  known are the inputs' characters / 4 (a common tokens-per-character
  estimate; nothing is generated).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from aigc.v1 import embedding_pb2, generation_pb2, model_pb2
from server.core import retry
from server.core.limits import Limits
from server.core.validation import Violations, check_vendor_params
from server.errors import CapabilityNotSupported, InvalidRequest, ProviderNotConfigured, UpstreamError
from server.providers.embeddings import EmbeddingRequest, Embeddings
from server.providers.vendor_params import integral_numbers

if TYPE_CHECKING:
    from server.core.engine import Call
    from server.providers.base import Provider
    from server.routing import ModelRoute

# Texts in one EmbedRequest (OpenAI's own limit per call).
MAX_INPUTS = 2048
# The longest vector a caller may ask for (the longest models today have 4096).
MAX_DIMENSIONS = 65536
_MAX_USER_ID_CHARS = 256
_TASKS = frozenset(embedding_pb2.EmbeddingTask.values())


@dataclasses.dataclass(slots=True)
class EmbedAnswer:
    model: str
    provider: str
    vectors: list[list[float]]
    # Absent when any batch's vendor reported no count: never estimated.
    usage: generation_pb2.Usage | None


def check_request(request: embedding_pb2.EmbedRequest, limits: Limits, v: Violations) -> dict[str, Any]:
    """Adds every bad field to `v`; returns the vendor_params as a dict."""
    if not request.inputs:
        v.add("inputs", "at least one text is required")
    elif len(request.inputs) > MAX_INPUTS:
        v.add("inputs", f"at most {MAX_INPUTS} texts per request")
    else:
        for i, text in enumerate(request.inputs):
            if not text:
                v.add(f"inputs[{i}]", "must not be empty")
            elif len(text) > limits.max_text_chars:
                v.add(f"inputs[{i}]", f"at most {limits.max_text_chars} characters")
            elif "\0" in text:
                v.add(f"inputs[{i}]", "must not contain NUL (U+0000) characters")
    if request.HasField("output_dimensions") and not 1 <= request.output_dimensions <= MAX_DIMENSIONS:
        v.add("output_dimensions", f"must be between 1 and {MAX_DIMENSIONS}")
    if request.task not in _TASKS:
        v.add("task", "is not an EmbeddingTask value")
    if len(request.user_id) > _MAX_USER_ID_CHARS:
        v.add("user_id", f"at most {_MAX_USER_ID_CHARS} characters")
    if not request.HasField("vendor_params"):
        return {}
    return integral_numbers(json_format.MessageToDict(request.vendor_params))


def check_route(route: ModelRoute, params: dict[str, Any], v: Violations) -> None:
    """What the chosen model's provider reserves in its embeddings body."""
    check_vendor_params(params, route.provider.reserved_embedding_keys, v)


def check_model(route: ModelRoute) -> None:
    """The model embeds, and its provider is configured."""
    if model_pb2.CAPABILITY_EMBEDDINGS not in route.capabilities:
        raise CapabilityNotSupported(route.id, "CAPABILITY_EMBEDDINGS", "model", "embeddings")
    if not route.provider.ready():
        raise ProviderNotConfigured(route.id, route.provider.name, route.provider.not_ready_hint())


def reserve_tokens(request: embedding_pb2.EmbedRequest) -> int:
    return max(1, sum(len(text) for text in request.inputs) // 4)


def batches(
    request: embedding_pb2.EmbedRequest, route: ModelRoute, params: dict[str, Any], deadline: float | None
) -> list[EmbeddingRequest]:
    """The provider calls for `request`: its inputs in order, at most max_embedding_inputs each."""
    size = max(1, route.provider.max_embedding_inputs)
    inputs = list(request.inputs)
    return [
        EmbeddingRequest(
            upstream_model=route.upstream_model,
            inputs=inputs[start : start + size],
            dimensions=request.output_dimensions if request.HasField("output_dimensions") else None,
            task=request.task,
            user_id=request.user_id,
            vendor_params=params,
            deadline=deadline,
        )
        for start in range(0, len(inputs), size)
    ]


@dataclasses.dataclass(slots=True)
class Spent:
    """Tokens the vendor reported for the batches done so far: what a call that fails
    half-way is charged (the batches before the failure were real work)."""

    tokens: int = 0


async def call_batches(
    route: ModelRoute, calls: list[EmbeddingRequest], call: Call, spent: Spent
) -> EmbedAnswer:
    """Every batch in order, each retried as retry.retry_delay says; the vectors joined."""
    record = call.record
    provider = route.provider
    vectors: list[list[float]] = []
    tokens: int | None = 0
    for batch in calls:
        # Timed as time in the provider, with its client span (retries included).
        with record.opening():
            result = await _embed_retried(provider, batch, record.retried)
        record.upstream_ended(None, 0.0)
        if len(result.vectors) != len(batch.inputs):  # providers check this; a bug otherwise
            raise RuntimeError(
                f"{provider.name} returned {len(result.vectors)} vectors for {len(batch.inputs)}"
            )
        vectors.extend(result.vectors)
        spent.tokens += result.prompt_tokens or 0
        tokens = None if tokens is None or result.prompt_tokens is None else tokens + result.prompt_tokens
    usage = None if tokens is None else generation_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens)
    return EmbedAnswer(model=route.id, provider=provider.name, vectors=vectors, usage=usage)


async def _embed_retried(provider: Provider, request: EmbeddingRequest, on_retry) -> Embeddings:
    attempt = 0
    while True:
        try:
            return await provider.embed(request)
        except UpstreamError as error:
            delay = retry.retry_delay(error, attempt, provider.max_retries, request.deadline)
            if delay is None:
                raise
            on_retry(error, attempt + 1, delay)
            await asyncio.sleep(delay)
            attempt += 1


def no_default_model() -> InvalidRequest:
    return InvalidRequest({"model": "required: this deployment has no default embedding model"})


__all__ = ["MAX_INPUTS", "EmbedAnswer", "batches", "call_batches", "check_model", "check_request"]
