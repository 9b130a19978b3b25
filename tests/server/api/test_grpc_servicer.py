"""AigcService over gRPC end to end: the real server process, the real local
model (llama.cpp), called with real gRPC clients and the real grpcurl."""

from __future__ import annotations

import json
import subprocess

import grpc
import jsonschema
import pytest
from google.protobuf import json_format

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import content_pb2, generation_pb2, model_pb2
from tests.support.content import text_of
from tests.support.grpcurl import grpcurl, json_stream
from tests.support.processes import ROOT
from tests.support.status import error_info, status_details

SERVICE = "aigc.v1.AigcService"
F = generation_pb2


def user(text: str) -> content_pb2.Message:
    return content_pb2.Message(role=content_pb2.ROLE_USER, content=text)


def config(**fields) -> generation_pb2.GenerationConfig:
    return generation_pb2.GenerationConfig(**fields)


# --- grpcurl: reflection, describe, streaming ---------------------------------


def test_reflection_lists_service_health_and_reflection(server):
    result = grpcurl(server.address, "list")
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    assert "grpc.reflection.v1.ServerReflection" in services


def buf_curl(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `buf curl` (npm @bufbuild/buf), a client that speaks reflection v1 only when told so."""
    command = [str(ROOT / "node_modules" / ".bin" / "buf"), "curl", "--protocol", "grpc", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_a_reflection_v1_only_client_discovers_and_calls_the_api(server):
    # grpc-v1 only: no fallback to v1alpha after an UNIMPLEMENTED.
    base = f"http://{server.address}"
    listed = buf_curl("--reflect-protocol", "grpc-v1", "--list-methods", base)
    assert listed.returncode == 0, listed.stderr
    assert f"{SERVICE}/StreamChat" in listed.stdout.split()
    models = buf_curl("--reflect-protocol", "grpc-v1", f"{base}/{SERVICE}/ListModels")
    assert models.returncode == 0, models.stderr
    assert json.loads(models.stdout)["models"], models.stdout
    # And describes what v1 itself is, as reflection's own service.
    described = grpcurl(server.address, "describe", "grpc.reflection.v1.ServerReflection")
    assert described.returncode == 0, described.stderr
    assert "ServerReflectionInfo" in described.stdout


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
    assert all(m["message"]["parts"][0]["text"] for m in deltas)
    assert "message" not in last
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
    assert [p.WhichOneof("data") for p in response.message.parts] == ["text"]
    assert text_of(response.message)
    assert not response.message.content, "answers are always in parts"
    assert response.finish_reason in (F.FINISH_REASON_STOP, F.FINISH_REASON_MAX_TOKENS)
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
    assert response.finish_reason == F.FINISH_REASON_MAX_TOKENS
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
    streamed = "".join(text_of(m.message) for m in messages)
    assert streamed == text_of(unary.message)
    assert {p.index for m in messages for p in m.message.parts} == {0}
    assert messages[-1].usage.completion_tokens == unary.usage.completion_tokens


def test_stop_sequences_end_generation(stub):
    request = pb.CompleteRequest(
        prompt="1, 2, 3, 4, 5,",
        generation_config=config(max_output_tokens=30, temperature=0, stop_sequences=[" 8"]),
    )
    response = stub.Complete(request, timeout=60)
    assert response.finish_reason == F.FINISH_REASON_STOP
    assert " 8" not in response.text


def test_complete_and_stream_complete(stub):
    request = pb.CompleteRequest(prompt="Once upon a time", generation_config=config(max_output_tokens=12))
    unary = stub.Complete(request, timeout=60)
    assert unary.text and unary.provider == "local" and unary.usage.completion_tokens > 0
    messages = list(stub.StreamComplete(request, timeout=60))
    assert len(messages) >= 3
    assert messages[-1].finish_reason != F.FINISH_REASON_UNSPECIFIED
    assert messages[-1].usage.total_tokens > 0
    assert all(m.text for m in messages[:-1])


def test_list_models_shows_local_default_and_capabilities(stub):
    response = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    local = [m for m in response.models if m.id == "smollm2"]
    assert len(local) == 1
    assert local[0].provider == "local" and local[0].is_default and local[0].ready
    assert list(local[0].capabilities) == [
        model_pb2.CAPABILITY_TOOLS,
        model_pb2.CAPABILITY_JSON_OUTPUT,
        model_pb2.CAPABILITY_JSON_SCHEMA,
        model_pb2.CAPABILITY_RAW_COMPLETION,
    ]
    assert response.models[0].is_default
    gemini = next(m for m in response.models if m.id == "gemini-2.5-flash")
    assert model_pb2.CAPABILITY_REASONING in gemini.capabilities
    assert model_pb2.CAPABILITY_VISION in gemini.capabilities


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
    info = error_info(caught.value)
    assert info.reason == "MODEL_NOT_FOUND"
    assert info.metadata["model"] == "gpt-9"
    assert info.metadata["request_id"] == "test-req-42"


def test_every_bad_field_is_reported_at_once(stub):
    request = pb.ChatRequest(
        messages=[
            content_pb2.Message(role=99, content="hi"),
            content_pb2.Message(role=content_pb2.ROLE_USER),
        ],
        generation_config=config(
            temperature=2.5, top_p=0, max_output_tokens=0, stop_sequences=["a", "b", "c", "d", "e"]
        ),
        user_id="u" * 300,
    )
    # n_predict is llama.cpp's name for the token limit: the typed field owns it.
    request.vendor_params.update({"max_tokens": 5, "n_predict": 1})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info.reason == "INVALID_REQUEST"
    assert len(status_details(caught.value).status.details) == 2  # ErrorInfo, BadRequest
    assert set(status_details(caught.value).violations) == {
        "messages[0].role",
        "messages[1].parts",
        "generation_config.temperature",
        "generation_config.top_p",
        "generation_config.max_output_tokens",
        "generation_config.stop_sequences",
        "user_id",
        "vendor_params.max_tokens",
        "vendor_params.n_predict",
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
    assert list(status_details(caught.value).violations) == [violation]


def test_empty_prompt_is_invalid(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Complete(pb.CompleteRequest(prompt=""), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_vendor_params_reach_the_provider_and_its_errors_map(stub):
    # llama.cpp rejects an empty list of DRY breakers (our allowlist lets it
    # through): its 400 must come back as INVALID_ARGUMENT naming the provider
    # and the upstream status.
    request = pb.ChatRequest(messages=[user("hi")], generation_config=config(max_output_tokens=4))
    request.vendor_params.update({"dry_sequence_breakers": []})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info.reason == "UPSTREAM_INVALID_REQUEST"
    assert info.metadata["provider"] == "local"
    assert info.metadata["upstream_status"] == "400"
    # A valid vendor parameter is accepted (and an integral number stays an int).
    request.vendor_params.Clear()
    request.vendor_params.update({"top_k": 1})
    assert stub.Chat(request, timeout=30).usage.completion_tokens > 0
    # One the local model's allowlist does not have is refused here, naming it.
    request.vendor_params.Clear()
    request.vendor_params.update({"n_probs": 100000})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "vendor_params.n_probs" in status_details(caught.value).violations


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


# --- typed content with the local model -------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "languages": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "languages"],
    "additionalProperties": False,
}


def person_request() -> pb.ChatRequest:
    return json_format.ParseDict(
        {
            "messages": [{"role": "ROLE_USER", "content": "Describe a made-up person as JSON."}],
            "response_format": {"type": "TYPE_JSON_SCHEMA", "schema": PERSON, "name": "person"},
            "generation_config": {"max_output_tokens": 120, "temperature": 0},
        },
        pb.ChatRequest(),
    )


def test_json_schema_answer_parses_and_validates(stub):
    """llama.cpp compiles the schema into a grammar: even a 135M model's answer matches."""
    response = stub.Chat(person_request(), timeout=60)
    assert response.finish_reason == F.FINISH_REASON_STOP
    jsonschema.validate(json.loads(text_of(response.message)), PERSON)


def test_json_schema_streamed_answer_parses_and_validates(stub):
    messages = list(stub.StreamChat(person_request(), timeout=60))
    assert len(messages) > 3
    jsonschema.validate(json.loads("".join(text_of(m.message) for m in messages)), PERSON)


WEATHER_TOOL = {
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
}


def weather_request(**choice) -> pb.ChatRequest:
    return json_format.ParseDict(
        {
            "messages": [{"role": "ROLE_USER", "content": "What is the weather in Paris?"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": choice,
            "generation_config": {"max_output_tokens": 60, "temperature": 0},
        },
        pb.ChatRequest(),
    )


@pytest.mark.parametrize(
    "choice", [{"mode": "MODE_REQUIRED"}, {"function_name": "get_weather"}], ids=["required", "named"]
)
def test_local_model_calls_a_required_tool_then_answers_its_result(stub, choice):
    response = stub.Chat(weather_request(**choice), timeout=60)
    assert response.finish_reason == F.FINISH_REASON_TOOL_CALLS
    calls = [p.tool_call for p in response.message.parts if p.WhichOneof("data") == "tool_call"]
    assert calls and all(c.name == "get_weather" and c.id for c in calls)
    arguments = json.loads(calls[0].arguments)
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str)
    # The round trip: the assistant's turn as returned, the tool's result, the answer.
    follow_up = weather_request()
    follow_up.ClearField("tool_choice")
    follow_up.messages.append(response.message)
    results = follow_up.messages.add(role=content_pb2.ROLE_TOOL)
    for call in calls:
        results.parts.add().tool_result.CopyFrom(
            content_pb2.ToolResult(tool_call_id=call.id, content='{"temp_c": 18, "sky": "clear"}')
        )
    answer = stub.Chat(follow_up, timeout=60)
    assert answer.finish_reason in (F.FINISH_REASON_STOP, F.FINISH_REASON_MAX_TOKENS)
    assert text_of(answer.message)


def test_streamed_tool_call_deltas_fold_to_the_unary_call(stub):
    request = weather_request(mode="MODE_REQUIRED")
    messages = list(stub.StreamChat(request, timeout=60))
    deltas = [p for m in messages for p in m.message.parts]
    assert deltas and all(p.WhichOneof("data") == "tool_call" for p in deltas)
    first = {p.index: p.tool_call.id for p in deltas}
    assert all(p.tool_call.id == first[p.index] and p.tool_call.name == "get_weather" for p in deltas)
    arguments = "".join(p.tool_call.arguments for p in deltas if p.index == 0)
    assert isinstance(json.loads(arguments), dict)
    assert messages[-1].finish_reason == F.FINISH_REASON_TOOL_CALLS


def test_asking_a_model_for_a_capability_it_lacks_is_refused(stub):
    request = pb.ChatRequest(messages=[user("What is in this picture?")])
    request.messages[0].ClearField("content")
    request.messages[0].parts.add(text="What is in this picture?")
    request.messages[0].parts.add().image.CopyFrom(content_pb2.Image(uri="https://example.com/cat.png"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info.reason == "CAPABILITY_NOT_SUPPORTED"
    assert (info.metadata["capability"], info.metadata["model"]) == ("CAPABILITY_VISION", "smollm2")
    assert status_details(caught.value).violations.keys() == {"messages[0].parts[1].image"}


def test_reasoning_on_a_model_without_it_is_refused(stub):
    request = pb.ChatRequest(messages=[user("2+2?")])
    request.reasoning.include_reasoning = True
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=10)
    info = error_info(caught.value)
    assert (info.reason, info.metadata["capability"]) == ("CAPABILITY_NOT_SUPPORTED", "CAPABILITY_REASONING")


def test_complete_is_a_raw_completion_on_the_local_model(stub):
    """No chat template: the prompt's own tokens are all the prompt counts."""
    completion = stub.Complete(
        pb.CompleteRequest(prompt="The capital of France is", generation_config=config(max_output_tokens=3)),
        timeout=60,
    )
    chat = stub.Chat(
        pb.ChatRequest(
            messages=[user("The capital of France is")], generation_config=config(max_output_tokens=3)
        ),
        timeout=60,
    )
    assert completion.usage.prompt_tokens < chat.usage.prompt_tokens
