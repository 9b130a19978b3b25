"""AigcService end to end: the real server process, the real local model
(llama.cpp), called with real gRPC clients and the real grpcurl."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import content_pb2
from tests.support.grpcurl import grpcurl, json_stream

SERVICE = "aigc.v1.AigcService"


def user(text: str) -> content_pb2.Message:
    return content_pb2.Message(role=content_pb2.ROLE_USER, content=text)


def config(**fields) -> content_pb2.GenerationConfig:
    return content_pb2.GenerationConfig(**fields)


def rich_error(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list]:
    """The ErrorInfo and the other details of a failed call's google.rpc.Status."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    assert status.code == error.code().value[0]
    info, others = None, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        else:
            others.append(detail)
    assert info is not None, f"no ErrorInfo in {status}"
    assert info.domain == "aigc-service"
    return info, others


# --- grpcurl: reflection, describe, streaming ---------------------------------


def test_reflection_lists_service_health_and_reflection(server):
    result = grpcurl(server.address, "list")
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services


def test_describe_shows_http_options(server):
    result = grpcurl(server.address, "describe", SERVICE)
    assert result.returncode == 0, result.stderr
    assert 'post:"/v1/chat:streamGenerate"' in result.stdout
    assert 'get:"/v1/models"' in result.stdout


def test_grpcurl_stream_chat_streams_and_ends_with_finish_and_usage(server):
    request = {
        "messages": [{"role": "ROLE_USER", "content": "Tell me about the sea."}],
        "generation_config": {"max_output_tokens": 24},
    }
    result = grpcurl(server.address, f"{SERVICE}/StreamChat", data=request)
    assert result.returncode == 0, result.stderr
    messages = json_stream(result.stdout)
    assert len(messages) >= 5
    *deltas, last = messages
    assert all("finishReason" not in m for m in deltas)
    assert all(m["message"]["content"] for m in deltas)
    assert last["finishReason"] in ("FINISH_REASON_STOP", "FINISH_REASON_MAX_TOKENS")
    usage = last["usage"]
    assert usage["completionTokens"] > 0 and usage["promptTokens"] > 0
    assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"]
    # One response id and one create time across the whole stream.
    assert len({m["id"] for m in messages}) == 1
    assert len({m["createTime"] for m in messages}) == 1


def test_grpcurl_error_exit_code_is_64_plus_grpc_code(server):
    result = grpcurl(server.address, f"{SERVICE}/Chat", data={"model": "no-such-model", "messages": []})
    # INVALID_ARGUMENT (3): validation runs before routing.
    assert result.returncode == 64 + 3, result.stderr


# --- unary and streaming shapes ------------------------------------------------


def test_chat_unary_unified_shape_with_chinese(stub):
    response = stub.Chat(
        pb.ChatRequest(messages=[user("用一句话介绍长城。")], generation_config=config(max_output_tokens=16)),
        timeout=60,
    )
    assert response.id
    assert response.model == "smollm2"
    assert response.provider == "local"
    assert response.create_time.seconds > 0
    assert response.message.role == content_pb2.ROLE_ASSISTANT
    assert response.message.content
    assert response.finish_reason in (content_pb2.FINISH_REASON_STOP, content_pb2.FINISH_REASON_MAX_TOKENS)
    assert response.usage.completion_tokens <= 16
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert not response.HasField("error")


def test_max_output_tokens_is_honoured_and_reported(stub):
    response = stub.Chat(
        pb.ChatRequest(
            messages=[user("Write a long essay about rivers.")], generation_config=config(max_output_tokens=7)
        ),
        timeout=60,
    )
    assert response.finish_reason == content_pb2.FINISH_REASON_MAX_TOKENS
    assert response.usage.completion_tokens == 7


def test_stream_text_equals_deterministic_unary_text(stub):
    """Greedy decoding makes the model deterministic: the streamed deltas must
    join to exactly the unary answer, so no token is lost or repeated."""
    request = pb.ChatRequest(
        messages=[user("Name three colours.")],
        generation_config=config(max_output_tokens=20, temperature=0, seed=7),
    )
    unary = stub.Chat(request, timeout=60)
    messages = list(stub.StreamChat(request, timeout=60))
    streamed = "".join(m.message.content for m in messages)
    assert streamed == unary.message.content
    assert messages[-1].usage.completion_tokens == unary.usage.completion_tokens


def test_stop_sequences_end_generation(stub):
    request = pb.CompleteRequest(
        prompt="1, 2, 3, 4, 5,",
        generation_config=config(max_output_tokens=30, temperature=0, stop_sequences=[" 8"]),
    )
    response = stub.Complete(request, timeout=60)
    assert response.finish_reason == content_pb2.FINISH_REASON_STOP
    assert " 8" not in response.text


def test_complete_and_stream_complete(stub):
    request = pb.CompleteRequest(prompt="Once upon a time", generation_config=config(max_output_tokens=12))
    unary = stub.Complete(request, timeout=60)
    assert unary.text and unary.provider == "local" and unary.usage.completion_tokens > 0
    messages = list(stub.StreamComplete(request, timeout=60))
    assert len(messages) >= 3
    assert messages[-1].finish_reason != content_pb2.FINISH_REASON_UNSPECIFIED
    assert messages[-1].usage.total_tokens > 0
    assert all(m.text for m in messages[:-1])


def test_list_models_shows_local_default(stub):
    response = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    local = [m for m in response.models if m.id == "smollm2"]
    assert len(local) == 1
    assert local[0].provider == "local" and local[0].is_default and local[0].ready
    assert response.models[0].is_default


def test_list_models_pages(stub):
    first = stub.ListModels(pb.ListModelsRequest(page_size=1), timeout=10)
    assert len(first.models) == 1
    seen = [first.models[0].id]
    token = first.next_page_token
    while token:
        page = stub.ListModels(pb.ListModelsRequest(page_size=1, page_token=token), timeout=10)
        seen += [m.id for m in page.models]
        token = page.next_page_token
    everything = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert seen == [m.id for m in everything.models]


# --- errors ----------------------------------------------------------------------


def test_unknown_model_is_not_found_with_error_info_and_request_id(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(
            pb.ChatRequest(model="gpt-9", messages=[user("hi")]),
            metadata=(("x-request-id", "test-req-42"),),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = rich_error(caught.value)
    assert info.reason == "MODEL_NOT_FOUND"
    assert info.metadata["model"] == "gpt-9"
    assert info.metadata["request_id"] == "test-req-42"


def test_every_bad_field_is_reported_at_once(stub):
    request = pb.ChatRequest(
        messages=[content_pb2.Message(content="")],
        generation_config=config(
            temperature=2.5, top_p=0, max_output_tokens=0, stop_sequences=["a", "b", "c", "d", "e"]
        ),
        user_id="u" * 300,
    )
    request.vendor_params.update({"max_tokens": 5})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, others = rich_error(caught.value)
    assert info.reason == "INVALID_REQUEST"
    bad = error_details_pb2.BadRequest()
    assert len(others) == 1 and others[0].Unpack(bad)
    fields = {v.field for v in bad.field_violations}
    assert fields == {
        "messages[0].role",
        "messages[0].content",
        "generation_config.temperature",
        "generation_config.top_p",
        "generation_config.max_output_tokens",
        "generation_config.stop_sequences",
        "user_id",
        "vendor_params",
    }


@pytest.mark.parametrize(
    ("messages", "violation"),
    [
        ([], "messages"),
        ([content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content="be brief")], "messages"),
    ],
)
def test_conversation_needs_a_non_system_message(stub, messages, violation):
    with pytest.raises(grpc.RpcError) as caught:
        stub.StreamChat(pb.ChatRequest(messages=messages), timeout=10).next()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, others = rich_error(caught.value)
    bad = error_details_pb2.BadRequest()
    others[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == [violation]


def test_empty_prompt_is_invalid(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Complete(pb.CompleteRequest(prompt=""), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_vendor_params_reach_the_provider_and_its_errors_map(stub):
    # llama.cpp rejects a string where it wants a number: its 400 must come
    # back as INVALID_ARGUMENT naming the provider and the upstream status.
    request = pb.ChatRequest(messages=[user("hi")], generation_config=config(max_output_tokens=4))
    request.vendor_params.update({"n_probs": "many"})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, _ = rich_error(caught.value)
    assert info.reason == "UPSTREAM_INVALID_REQUEST"
    assert info.metadata["provider"] == "local"
    assert info.metadata["upstream_status"] == "400"
    # A valid vendor parameter is accepted (and an integral number stays an int).
    request.vendor_params.Clear()
    request.vendor_params.update({"top_k": 1})
    assert stub.Chat(request, timeout=30).usage.completion_tokens > 0


def test_bad_page_token_is_invalid(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListModels(pb.ListModelsRequest(page_token="garbage!"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_request_id_comes_back_in_initial_metadata(stub):
    _, call = stub.Chat.with_call(
        pb.ChatRequest(messages=[user("hi")], generation_config=config(max_output_tokens=2)),
        metadata=(("x-request-id", "abc-123"),),
        timeout=30,
    )
    assert ("x-request-id", "abc-123") in call.initial_metadata()


def test_service_keeps_serving_after_errors(stub):
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            stub.Chat(pb.ChatRequest(model="nope", messages=[user("x")]), timeout=10)
    response = stub.Chat(
        pb.ChatRequest(messages=[user("hi")], generation_config=config(max_output_tokens=3)), timeout=30
    )
    assert response.usage.completion_tokens > 0
