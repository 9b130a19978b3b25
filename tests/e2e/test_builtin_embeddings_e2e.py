"""The built-in embedding model (all-MiniLM-L6-v2 under llama.cpp), with no key and no
network: through gRPC, and through Envoy with the official openai SDK's
`embeddings.create` in both encodings.

Vectors must be deterministic (the same text, the same vector, call after call)
and meaningful: a paraphrase is closer than an unrelated sentence, in English
and in Chinese.
"""

from __future__ import annotations

import math

import grpc
import openai
import pytest

from aigc.v1 import embedding_pb2
from tests.e2e.conftest import E2E, TIMEOUT
from tests.support.status import error_info

MODEL = "all-minilm-l6-v2"
# (sentence, its paraphrase, an unrelated sentence)
TRIPLES = [
    ("A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."),
    (
        "How do I reset my password?",
        "I forgot my password, how can I change it?",
        "Bananas are rich in potassium.",
    ),
    ("今天天气很好。", "今天的天气非常好。", "我明天要去银行办事。"),
    ("我喜欢吃苹果。", "苹果是我爱吃的水果。", "这辆火车晚点了两个小时。"),
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


@pytest.fixture
def client(e2e: E2E) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{e2e.stack.http}/openai/v1", api_key="unused", max_retries=0, timeout=TIMEOUT * 3
    )


def test_paraphrases_are_closer_than_unrelated_sentences_and_vectors_repeat(e2e: E2E):
    inputs = [sentence for triple in TRIPLES for sentence in triple]
    # The first call may convert and load the model: give it time.
    first = e2e.stub.Embed(embedding_pb2.EmbedRequest(inputs=inputs), timeout=TIMEOUT * 3)
    assert (first.model, first.provider) == (MODEL, "local"), "the default embedding model"
    vectors = [list(e.values) for e in first.embeddings]
    assert len(vectors) == len(inputs) and {len(v) for v in vectors} == {384}
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors), "unit length"
    for i, (sentence, paraphrase, unrelated) in enumerate(TRIPLES):
        a, b, c = vectors[3 * i : 3 * i + 3]
        assert cosine(a, b) > cosine(a, c) + 0.1, (
            sentence,
            paraphrase,
            unrelated,
            cosine(a, b),
            cosine(a, c),
        )
    assert first.usage.prompt_tokens > len(inputs)
    again = e2e.stub.Embed(embedding_pb2.EmbedRequest(model=MODEL, inputs=inputs[::-1]), timeout=TIMEOUT)
    assert [list(e.values) for e in again.embeddings] == vectors[::-1], "deterministic, in input order"


def test_openai_sdk_float_and_base64_through_envoy(e2e: E2E, client: openai.OpenAI):
    inputs = ["The cat sits on the mat.", "猫坐在垫子上。"]
    floats = client.embeddings.create(model=MODEL, input=inputs, encoding_format="float")
    # The SDK's default: it asks for base64 and decodes it to floats itself.
    decoded = client.embeddings.create(model=MODEL, input=inputs)
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.model == MODEL and floats.usage.prompt_tokens > 0
    for a, b in zip(floats.data, decoded.data, strict=True):
        assert len(a.embedding) == 384
        # base64 carries float32: equal to the float answer at float32 precision.
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding, strict=True)) < 1e-6
    raw = e2e.http.post(
        "/openai/v1/embeddings", json={"model": MODEL, "input": "one text", "encoding_format": "base64"}
    )
    assert raw.status_code == 200, raw.text
    assert isinstance(raw.json()["data"][0]["embedding"], str)


def test_the_door_refuses_what_it_cannot_do_in_openai_shape(e2e: E2E, client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, input=["a"], dimensions=64)
    assert caught.value.body["code"] == "INVALID_REQUEST"
    assert "output_dimensions" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, input=[[1, 2, 3]])
    assert "token arrays" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in caught.value.body["message"]


def test_a_text_longer_than_the_model_takes_is_invalid_argument_not_a_server_error(e2e: E2E):
    request = embedding_pb2.EmbedRequest(model=MODEL, inputs=["short", "word " * 600])
    with pytest.raises(grpc.RpcError) as caught:
        e2e.stub.Embed(request, timeout=TIMEOUT * 3)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert error_info(caught.value).reason == "CONTEXT_LENGTH_EXCEEDED"
    rest = e2e.http.post("/v1/embedding:generate", json={"model": MODEL, "inputs": ["word " * 600]})
    assert rest.status_code == 400, rest.text
