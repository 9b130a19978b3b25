"""The Gemini embeddings wire format (server/providers/gemini/embeddings.py), as pure functions."""

from __future__ import annotations

import pytest

from aigc.v1 import embedding_pb2
from server.providers.embeddings import EmbeddingRequest
from server.providers.gemini import embeddings


def test_one_text_is_embed_content_several_are_batch_embed_contents():
    assert embeddings.embed_path("gemini-embedding-001", batch=False) == (
        "/v1beta/models/gemini-embedding-001:embedContent"
    )
    assert embeddings.embed_path("tunedModels/x", batch=True) == "/v1beta/tunedModels/x:batchEmbedContents"
    one = EmbeddingRequest("gemini-embedding-001", ["a"], task=embedding_pb2.EMBEDDING_TASK_SIMILARITY)
    assert embeddings.embed_body(one) == {
        "content": {"parts": [{"text": "a"}]},
        "taskType": "SEMANTIC_SIMILARITY",
    }
    batch = EmbeddingRequest("gemini-embedding-001", ["a", "b"], dimensions=8, vendor_params={"title": "T"})
    assert embeddings.embed_body(batch) == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "title": "T",
                "content": {"parts": [{"text": text}]},
                "outputDimensionality": 8,
            }
            for text in ("a", "b")
        ]
    }


@pytest.mark.parametrize(
    ("task", "task_type"),
    [
        (embedding_pb2.EMBEDDING_TASK_QUERY, "RETRIEVAL_QUERY"),
        (embedding_pb2.EMBEDDING_TASK_DOCUMENT, "RETRIEVAL_DOCUMENT"),
        (embedding_pb2.EMBEDDING_TASK_SIMILARITY, "SEMANTIC_SIMILARITY"),
        (embedding_pb2.EMBEDDING_TASK_UNSPECIFIED, None),
    ],
)
def test_task_types(task, task_type):
    body = embeddings.embed_body(EmbeddingRequest("m", ["a"], task=task))
    assert body.get("taskType") == task_type


def test_answers_in_order_without_usage():
    assert embeddings.parse_embeddings({"embedding": {"values": [1.0]}}, 1).vectors == [[1.0]]
    result = embeddings.parse_embeddings({"embeddings": [{"values": [1.0]}, {"values": [2, 3]}]}, 2)
    assert (result.vectors, result.prompt_tokens) == ([[1.0], [2, 3]], None)


@pytest.mark.parametrize(
    "answer",
    [
        {"embeddings": [{"values": [1.0]}]},
        {"embeddings": [{"values": []}, {"values": [1]}]},
        {"error": {}},
        [],
    ],
)
def test_a_wrong_shape_raises_for_malformed_response(answer):
    with pytest.raises((KeyError, TypeError, ValueError)):
        embeddings.parse_embeddings(answer, 2)
