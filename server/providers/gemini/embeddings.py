"""The Gemini embeddings wire format (v1beta), pure functions.

    POST {base_url}/v1beta/models/{model}:embedContent         one text
    {"content": {"parts": [{"text": ...}]}, "taskType"?: ..., "outputDimensionality"?: n}
    -> {"embedding": {"values": [floats]}}

    POST {base_url}/v1beta/models/{model}:batchEmbedContents   several texts (at most 100)
    {"requests": [{"model": "models/{model}", <as above>}, ...]}
    -> {"embeddings": [{"values": [floats]}, ...]}          in request order

Gemini reports no token counts for embeddings: the usage stays absent.
vendor_params (e.g. `title` for documents) go into every text's request.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from aigc.v1 import embedding_pb2
from server.providers.embeddings import EmbeddingRequest, Embeddings

# Gemini's limit per batchEmbedContents call.
MAX_BATCH = 100
RESERVED_KEYS = frozenset({"model", "content", "requests", "taskType", "outputDimensionality"})
_TASK_TYPES = {
    embedding_pb2.EMBEDDING_TASK_QUERY: "RETRIEVAL_QUERY",
    embedding_pb2.EMBEDDING_TASK_DOCUMENT: "RETRIEVAL_DOCUMENT",
    embedding_pb2.EMBEDDING_TASK_SIMILARITY: "SEMANTIC_SIMILARITY",
}


def _model_name(upstream_model: str) -> str:
    # As for generation (wire.stream_path): `models/` unless the name has a collection.
    return upstream_model if "/" in upstream_model else f"models/{upstream_model}"


def embed_path(upstream_model: str, batch: bool) -> str:
    method = "batchEmbedContents" if batch else "embedContent"
    return f"/v1beta/{urllib.parse.quote(_model_name(upstream_model), safe='/')}:{method}"


def _one(request: EmbeddingRequest, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {**request.vendor_params, "content": {"parts": [{"text": text}]}}
    task = _TASK_TYPES.get(request.task)
    if task:
        body["taskType"] = task
    if request.dimensions is not None:
        body["outputDimensionality"] = request.dimensions
    return body


def embed_body(request: EmbeddingRequest) -> dict[str, Any]:
    """The body for embed_path(model, batch=len(inputs) > 1)."""
    if len(request.inputs) == 1:
        return _one(request, request.inputs[0])
    name = _model_name(request.upstream_model)
    return {"requests": [{"model": name, **_one(request, text)} for text in request.inputs]}


def parse_embeddings(answer: Any, count: int) -> Embeddings:
    """The vectors in input order; raises KeyError/TypeError/ValueError for a wrong shape."""
    if not isinstance(answer, Mapping):
        raise TypeError(f"the answer is a {type(answer).__name__}, not an object")
    items = [answer["embedding"]] if count == 1 and "embedding" in answer else answer["embeddings"]
    if not isinstance(items, list) or len(items) != count:
        raise ValueError(f"{len(items) if isinstance(items, list) else 'no'} embeddings for {count} inputs")
    vectors = []
    for item in items:
        values = item["values"]
        if not isinstance(values, list) or not values:
            raise TypeError("an embedding has no list of values")
        for value in values:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"an embedding holds {value!r}, not a number")
        vectors.append(values)
    return Embeddings(vectors=vectors, prompt_tokens=None)


__all__ = ["MAX_BATCH", "RESERVED_KEYS", "embed_body", "embed_path", "parse_embeddings"]
