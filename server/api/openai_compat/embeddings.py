"""OpenAI's Embeddings JSON <-> aigc.v1 EmbedRequest / EmbedResponse, as pure functions.

    POST /openai/v1/embeddings
    {"model": ..., "input": "text" | ["text", ...], "encoding_format"?: "float" | "base64",
     "dimensions"?: n, "user"?: id, "vendor_params"?: {...}}
    -> {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": ...}],
        "model": ..., "usage": {"prompt_tokens": n, "total_tokens": n}}

`base64` is the vector's little-endian float32 bytes, base64-encoded - what
OpenAI sends and what the official SDKs ask for by default and decode. Where
it differs from OpenAI: token arrays as `input` are refused (our models take
text, and token ids mean nothing across vendors); `model` may be left out
(the default embedding model answers); usage is 0 when the vendor reported
none (Gemini), since OpenAI's shape has no way to say "absent".
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from google.protobuf import json_format

from aigc.v1 import embedding_pb2
from server.errors import InvalidRequest

_FIELDS = {"model", "input", "encoding_format", "dimensions", "user", "vendor_params"}
_ENCODINGS = ("float", "base64")


def embed_request(body: Any) -> tuple[embedding_pb2.EmbedRequest, str]:
    """(the EmbedRequest, the encoding asked for) from an embeddings body; InvalidRequest otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequest({"body": "must be a JSON object"})
    problems: dict[str, str] = {}
    for name in body:
        if name not in _FIELDS:
            problems.setdefault(name, "unrecognized request argument")
    request = embedding_pb2.EmbedRequest()
    strings = {}
    for name in ("model", "user"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            problems.setdefault(name, "must be a string")
        strings[name] = value if isinstance(value, str) else ""
    request.model, request.user_id = strings["model"], strings["user"]
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        problems.setdefault("input", "must be a string or a non-empty array of strings")
    elif not all(isinstance(text, str) for text in texts):
        problems.setdefault("input", "must be strings (token arrays are not offered)")
    else:
        request.inputs.extend(texts)
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    elif encoding not in _ENCODINGS:
        problems.setdefault("encoding_format", "float or base64")
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions < 2**31:
            problems.setdefault("dimensions", "must be a positive integer")
        else:
            request.output_dimensions = dimensions
    params = body.get("vendor_params")
    if params is not None:
        if not isinstance(params, dict):
            problems.setdefault("vendor_params", "must be an object")
        else:
            try:
                json_format.ParseDict(params, request.vendor_params)
            except (json_format.ParseError, ValueError, TypeError) as exc:
                problems.setdefault("vendor_params", f"is not valid JSON for a protobuf Struct: {exc}")
    if problems:
        raise InvalidRequest(problems)
    return request, encoding


def embeddings_response(
    model: str, vectors: list[list[float]], prompt_tokens: int | None, encoding: str
) -> dict:
    tokens = prompt_tokens or 0
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(vector, encoding)}
            for i, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


__all__ = ["embed_request", "embeddings_response", "encode"]
