"""The OpenAI embeddings wire format, pure functions (OpenAI and every compatible server).

    POST {base_url}/embeddings
    {"model": ..., "input": [texts], "encoding_format": "float", "dimensions"?: n, "user"?: id}
    -> {"data": [{"index": i, "embedding": [floats]}, ...], "usage": {"prompt_tokens": n, ...}}

We always ask for floats: base64 is OpenAI's own and not every compatible
server (Zhipu, Qianfan) documents it; our door encodes base64 itself for
callers who want it. The task type has no field in this API and is not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.providers.embeddings import EmbeddingRequest, Embeddings

RESERVED_KEYS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


def embeddings_body(request: EmbeddingRequest) -> dict[str, Any]:
    body: dict[str, Any] = {**request.vendor_params}
    body["model"] = request.upstream_model
    body["input"] = list(request.inputs)
    body["encoding_format"] = "float"
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user_id:
        body["user"] = request.user_id
    return body


def parse_embeddings(answer: Any, count: int) -> Embeddings:
    """The answer's vectors in input order; raises ValueError/KeyError/TypeError
    (the caller's MALFORMED_RESPONSE) for a wrong shape or a missing vector."""
    if not isinstance(answer, Mapping):
        raise TypeError(f"the answer is a {type(answer).__name__}, not an object")
    vectors: list[list[float] | None] = [None] * count
    for item in answer["data"]:
        index = item["index"]
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None:
            raise ValueError(f"bad or repeated index {index!r} for {count} inputs")
        vectors[index] = _floats(item["embedding"])
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        raise ValueError(f"no vector for input {missing[0]} of {count}")
    usage = answer.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
    return Embeddings(vectors=vectors, prompt_tokens=tokens if isinstance(tokens, int) else None)  # type: ignore[arg-type]


def _floats(values: Any) -> list[float]:
    if not isinstance(values, list) or not values:
        raise TypeError("an embedding is not a non-empty list of numbers")
    for value in values:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TypeError(f"an embedding holds {value!r}, not a number")
    return values


__all__ = ["RESERVED_KEYS", "embeddings_body", "parse_embeddings"]
