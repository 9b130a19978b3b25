"""The OpenAI embeddings wire format (server/providers/openai/embeddings.py), as pure functions."""

from __future__ import annotations

import pytest

from server.providers.embeddings import EmbeddingRequest
from server.providers.openai import embeddings


def test_body_has_the_typed_fields_and_vendor_params_cannot_override_them():
    request = EmbeddingRequest(
        "text-embedding-3-small", ["a", "b"], dimensions=256, user_id="u", vendor_params={"extra": 1}
    )
    assert embeddings.embeddings_body(request) == {
        "extra": 1,
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 256,
        "user": "u",
    }
    assert "dimensions" not in embeddings.embeddings_body(EmbeddingRequest("m", ["a"]))
    assert embeddings.RESERVED_KEYS >= {"model", "input", "dimensions", "encoding_format"}


def test_vectors_come_back_in_input_order_whatever_order_the_data_is_in():
    answer = {
        "data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1, 0.5]}],
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    result = embeddings.parse_embeddings(answer, 2)
    assert result.vectors == [[1, 0.5], [2.0]]
    assert result.prompt_tokens == 7


def test_no_usage_is_none_not_zero():
    assert embeddings.parse_embeddings({"data": [{"index": 0, "embedding": [1.0]}]}, 1).prompt_tokens is None


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"data": []},
        {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
        {"data": [{"index": 2, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
        {"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": [1.0]}]},
        {"data": [{"index": 0, "embedding": [True]}, {"index": 1, "embedding": [1.0]}]},
        {"data": [{"index": 0, "embedding": []}, {"index": 1, "embedding": [1.0]}]},
    ],
)
def test_a_wrong_shape_raises_for_malformed_response(answer):
    with pytest.raises((KeyError, TypeError, ValueError)):
        embeddings.parse_embeddings(answer, 2)
