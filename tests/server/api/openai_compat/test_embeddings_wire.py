"""The OpenAI door's embeddings translation (server/api/openai_compat/embeddings.py)."""

from __future__ import annotations

import base64
import struct

import pytest

from server.api.openai_compat import embeddings
from server.errors import InvalidRequest


def test_a_string_or_strings_with_every_field():
    request, encoding = embeddings.embed_request(
        {"model": "m", "input": "one", "dimensions": 8, "user": "u", "encoding_format": "base64"}
    )
    assert (request.model, list(request.inputs), request.output_dimensions, request.user_id) == (
        "m",
        ["one"],
        8,
        "u",
    )
    assert encoding == "base64"
    request, encoding = embeddings.embed_request({"input": ["a", "b"]})
    assert (request.model, list(request.inputs), request.HasField("output_dimensions"), encoding) == (
        "",
        ["a", "b"],
        False,
        "float",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": [[1, 2]]}, "input"),
        ({"input": []}, "input"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "dimensions": True}, "dimensions"),
        ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "a", "model": 3}, "model"),
        ({"input": "a", "logprobs": True}, "logprobs"),
    ],
)
def test_bad_bodies_name_the_field(body, field):
    with pytest.raises(InvalidRequest) as caught:
        embeddings.embed_request(body)
    assert field in caught.value.violations


def test_base64_is_little_endian_float32_as_openai_sends_it():
    vector = [0.5, -1.25, 3.0]
    encoded = embeddings.encode(vector, "base64")
    assert list(struct.unpack("<3f", base64.b64decode(encoded))) == vector
    body = embeddings.embeddings_response("m", [vector], None, "float")
    assert body["data"] == [{"object": "embedding", "index": 0, "embedding": vector}]
    assert body["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
