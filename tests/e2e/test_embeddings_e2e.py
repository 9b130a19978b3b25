"""Embeddings through each vendor kind, end to end: gRPC Embed and REST through Envoy.

The real stack (tests/e2e/conftest.py) routes `text-embedding-3-small` (openai
preset), `text-embedding-v4` (qwen preset: DashScope takes at most 10 texts per
call), and `gemini-embedding-001` (at most 100 per batchEmbedContents) to the
wire-exact fakes, which compute each vector from its own text
(openai_fake.vector_for, gemini_fake.vector_for) and refuse batches over the
vendor's limit: so order across splits, the split itself, and usage are all
checked against what the vendor would have done.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import embedding_pb2, model_pb2
from tests.e2e.conftest import E2E, KEYS, TIMEOUT
from tests.fakes import gemini_fake, openai_fake
from tests.fakes.http import Respond


def texts(n: int) -> list[str]:
    # Different lengths and last characters: every vector differs from its neighbours'.
    return [f"第{i}句 text {'x' * (i % 7)}{chr(0x4E00 + i)}" for i in range(n)]


def values(response: embedding_pb2.EmbedResponse) -> list[list[float]]:
    return [list(e.values) for e in response.embeddings]


def reason_of(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo")


def test_openai_embeddings_over_grpc_with_dimensions_and_usage(e2e: E2E):
    e2e.fakes.openai.script(openai_fake.Embeddings())
    inputs = texts(3)
    request = embedding_pb2.EmbedRequest(
        model="text-embedding-3-small", inputs=inputs, output_dimensions=2, user_id="u-1"
    )
    response = e2e.stub.Embed(request, timeout=TIMEOUT)
    assert values(response) == [openai_fake.vector_for(t)[:2] for t in inputs]
    assert (response.model, response.provider) == ("text-embedding-3-small", "openai")
    tokens = openai_fake.tokens_for(inputs)
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (tokens, tokens)
    (sent,) = e2e.fakes.openai.requests
    assert sent.path == "/v1/embeddings"
    assert sent.json() == {
        "model": "text-embedding-3-small",
        "input": inputs,
        "encoding_format": "float",
        "dimensions": 2,
        "user": "u-1",
    }
    assert sent.headers["authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}"


def test_qwen_batches_of_ten_are_split_and_joined_in_order(e2e: E2E):
    e2e.fakes.openai.script(
        *(openai_fake.Embeddings(max_inputs=10, model="text-embedding-v4") for _ in range(3))
    )
    inputs = texts(23)
    response = e2e.stub.Embed(
        embedding_pb2.EmbedRequest(model="text-embedding-v4", inputs=inputs), timeout=TIMEOUT
    )
    assert values(response) == [openai_fake.vector_for(t) for t in inputs]
    assert [len(r.json()["input"]) for r in e2e.fakes.openai.requests] == [10, 10, 3]
    assert response.usage.prompt_tokens == openai_fake.tokens_for(inputs), "summed over the batches"
    assert response.provider == "qwen"


def test_gemini_batches_of_a_hundred_with_task_types_and_no_usage(e2e: E2E):
    e2e.fakes.gemini.script(gemini_fake.Embeddings(), gemini_fake.Embeddings())
    inputs = texts(150)
    request = embedding_pb2.EmbedRequest(
        model="gemini-embedding-001", inputs=inputs, task=embedding_pb2.EMBEDDING_TASK_QUERY
    )
    response = e2e.stub.Embed(request, timeout=TIMEOUT)
    assert values(response) == [gemini_fake.vector_for(t, "RETRIEVAL_QUERY") for t in inputs]
    assert not response.HasField("usage"), "Gemini reports no counts: absent, never estimated"
    first, second = e2e.fakes.gemini.requests
    assert first.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert [len(r.json()["requests"]) for r in (first, second)] == [100, 50]
    assert first.headers["x-goog-api-key"] == KEYS["GEMINI_API_KEY"]


def test_gemini_one_text_uses_embed_content_with_dimensions(e2e: E2E):
    e2e.fakes.gemini.script(gemini_fake.Embeddings())
    request = embedding_pb2.EmbedRequest(
        model="gemini-embedding-001",
        inputs=["文档"],
        task=embedding_pb2.EMBEDDING_TASK_DOCUMENT,
        output_dimensions=2,
    )
    response = e2e.stub.Embed(request, timeout=TIMEOUT)
    assert values(response) == [gemini_fake.vector_for("文档", "RETRIEVAL_DOCUMENT")[:2]]
    (sent,) = e2e.fakes.gemini.requests
    assert sent.path == "/v1beta/models/gemini-embedding-001:embedContent"
    assert sent.json() == {
        "content": {"parts": [{"text": "文档"}]},
        "taskType": "RETRIEVAL_DOCUMENT",
        "outputDimensionality": 2,
    }


def test_rest_through_envoy(e2e: E2E):
    e2e.fakes.openai.script(openai_fake.Embeddings())
    reply = e2e.http.post(
        "/v1/embedding:generate", json={"model": "text-embedding-3-small", "inputs": ["a", "bc"]}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [e["values"] for e in body["embeddings"]] == [
        openai_fake.vector_for("a"),
        openai_fake.vector_for("bc"),
    ]
    assert body["usage"]["prompt_tokens"] == 3


def test_list_models_shows_embedding_models(e2e: E2E):
    models = {
        m.id: m for m in e2e.stub.ListModels(pb.ListModelsRequest(page_size=1000), timeout=TIMEOUT).models
    }
    for model in ("text-embedding-3-small", "text-embedding-v4", "gemini-embedding-001", "all-minilm-l6-v2"):
        assert list(models[model].capabilities) == [model_pb2.CAPABILITY_EMBEDDINGS], model
    assert model_pb2.CAPABILITY_EMBEDDINGS not in models["gpt-4o-mini"].capabilities


@pytest.mark.parametrize(
    ("request_fields", "code", "reason"),
    [
        ({"model": "text-embedding-3-small"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
        (
            {"model": "gpt-4o-mini", "inputs": ["a"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "CAPABILITY_NOT_SUPPORTED",
        ),
        ({"model": "no-such-model", "inputs": ["a"]}, grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
        (
            {"model": "text-embedding-3-small", "inputs": ["a"], "vendor_params": {"input": ["x"]}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
        ),
        # Zhipu's key is not set in this stack.
        ({"model": "embedding-3", "inputs": ["a"]}, grpc.StatusCode.FAILED_PRECONDITION, None),
    ],
)
def test_bad_requests_are_refused_before_any_vendor_call(e2e: E2E, request_fields, code, reason):
    request = embedding_pb2.EmbedRequest()
    params = request_fields.pop("vendor_params", None)
    for name, value in request_fields.items():
        field = getattr(request, name)
        if isinstance(value, list):
            field.extend(value)
        else:
            setattr(request, name, value)
    if params:
        request.vendor_params.update(params)
    with pytest.raises(grpc.RpcError) as caught:
        e2e.stub.Embed(request, timeout=TIMEOUT)
    assert caught.value.code() == code, caught.value.details()
    if reason:
        assert reason_of(caught.value) == reason
    assert not e2e.fakes.openai.requests


def test_a_vendor_error_is_its_status_never_a_500(e2e: E2E):
    e2e.fakes.openai.script(openai_fake.error(400, "Invalid 'input': too long", code="invalid_request"))
    with pytest.raises(grpc.RpcError) as caught:
        e2e.stub.Embed(
            embedding_pb2.EmbedRequest(model="text-embedding-3-small", inputs=["a"]), timeout=TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "UPSTREAM_INVALID_REQUEST"
    assert KEYS["OPENAI_API_KEY"] not in caught.value.details()


def test_a_malformed_vendor_answer_is_malformed_response(e2e: E2E):
    # One vector for two inputs.
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}], "model": "m"}
    e2e.fakes.openai.script(Respond(200, body))
    request = embedding_pb2.EmbedRequest(model="text-embedding-3-small", inputs=["a", "b"])
    with pytest.raises(grpc.RpcError) as caught:
        e2e.stub.Embed(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert reason_of(caught.value) == "UPSTREAM_MALFORMED_RESPONSE"
    assert "no vector for input 1" in caught.value.details()


def test_chat_with_an_embedding_model_is_refused_before_any_vendor_call(e2e: E2E):
    from aigc.v1 import content_pb2

    request = pb.ChatRequest(
        model="text-embedding-3-small",
        messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")],
    )
    with pytest.raises(grpc.RpcError) as caught:
        e2e.stub.Chat(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "embedding model" in caught.value.details()
    assert not e2e.fakes.openai.requests
