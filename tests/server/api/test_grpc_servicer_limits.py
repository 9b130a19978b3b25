"""The server's own limits, each reproducing a defect found by trying it as a hostile caller:
the real server process, real gRPC on a real socket.

- bytes that are not protobuf answered UNKNOWN with Python's error text, no request id, no
  access line; now INVALID_ARGUMENT (MALFORMED_REQUEST), with both;
- a message over the size limit answered RESOURCE_EXHAUSTED (clients retry that); now
  INVALID_ARGUMENT (REQUEST_TOO_LARGE), never parsed;
- a prompt far larger than the local model's context was tokenized for half a minute
  before llama.cpp refused it; now refused before llama.cpp sees it;
- metadata that Envoy accepts (up to 60 KiB) was refused by grpc-core's 8 KiB default;
- NUL characters went through to the model;
- `vendor_params` could lift the typed token limit, and a model's cap could be exceeded;
- passthrough names became metric labels (2,000 names made 164k series);
- the local model's queue had no bound (20 streams on 4 slots waited up to 35 s) and told
  nobody to back off;
- when the shutdown grace ran out, running streams were cut without a word.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid

import grpc
import pytest

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from server.core.limits import MAX_REQUEST_BYTES
from tests.fakes import openai_fake
from tests.fakes.http import FakeServer, Stream
from tests.proxies.env import isolated_env, write_config
from tests.proxies.relays import LoopThread
from tests.support.processes import ServerProcess, running_server
from tests.support.status import error_info, status_details

SERVICE = "aigc.v1.AigcService"


def user(text: str) -> content_pb2.Message:
    return content_pb2.Message(role=content_pb2.ROLE_USER, content=text)


def raw_call(address: str, method: str, payload: bytes, **kwargs) -> grpc.RpcError:
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as channel:
        call = channel.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, timeout=30, **kwargs)
    return caught.value


def access_lines(server: ServerProcess) -> list[dict]:
    return [
        json.loads(line)
        for line in server.output().splitlines()
        if line.startswith("{") and '"logger":"aigc.access"' in line
    ]


# --- bytes and sizes (the session's server, with the local model) ------------------------


@pytest.mark.parametrize(
    "payload",
    [b"\xff" * 64, b"\x0a\x05\x0a\x03", b"\x12\xff\xff\xff\xff\x0f"],
    ids=["garbage", "truncated", "huge-length"],
)
@pytest.mark.parametrize("method", ["Chat", "StreamChat", "ListModels"])
def test_bytes_that_are_not_protobuf_are_invalid_argument_with_request_id_and_access_line(
    server: ServerProcess, payload: bytes, method: str
):
    request_id = f"garbage-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(server.address) as channel:
        if method == "StreamChat":
            call = channel.unary_stream(f"/{SERVICE}/{method}")
            with pytest.raises(grpc.RpcError) as caught:
                list(call(payload, timeout=10, metadata=[("x-request-id", request_id)]))
        else:
            call = channel.unary_unary(f"/{SERVICE}/{method}")
            with pytest.raises(grpc.RpcError) as caught:
                call(payload, timeout=10, metadata=[("x-request-id", request_id)])
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info = error_info(error)
    assert (info.reason, info.metadata["request_id"]) == ("MALFORMED_REQUEST", request_id)
    assert "Traceback" not in error.details() and "DecodeError" not in error.details()
    time.sleep(0.1)
    line = next(line for line in access_lines(server) if line.get("request_id") == request_id)
    assert (line["method"], line["code"]) == (method, "INVALID_ARGUMENT")


def test_a_message_over_the_limit_is_invalid_argument_not_retryable_exhaustion(server: ServerProcess):
    # A model name as long as the whole limit: the message is a few bytes over it.
    payload = pb.ChatRequest(model="a" * MAX_REQUEST_BYTES).SerializeToString()
    error = raw_call(server.address, "Chat", payload)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info = error_info(error)
    assert (info.reason, info.metadata["limit_bytes"]) == ("REQUEST_TOO_LARGE", str(MAX_REQUEST_BYTES))


def test_the_server_and_envoy_share_one_size_limit():
    from gateway import render

    assert render.MAX_REQUEST_BYTES == MAX_REQUEST_BYTES


def test_a_prompt_that_cannot_fit_the_local_context_is_refused_before_the_model(stub):
    request = pb.ChatRequest(messages=[user("word " * 40_000)])  # 200 kB: ~40k tokens, context 2048
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info.reason == "CONTEXT_LENGTH_EXCEEDED"
    assert "cannot fit the local model's context" in caught.value.details()


def test_metadata_as_large_as_envoy_accepts_is_served(stub):
    reply = stub.Chat(
        pb.ChatRequest(
            messages=[user("hi")], generation_config=generation_pb2.GenerationConfig(max_output_tokens=2)
        ),
        metadata=[("x-trace-context", "a" * 20 * 1024)],
        timeout=30,
    )
    assert reply.usage.completion_tokens >= 1


def test_nul_in_text_is_refused(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(pb.ChatRequest(messages=[user("a\0b")]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_details(caught.value).violations == {
        "messages[0].content": "must not contain NUL (U+0000) characters"
    }


def test_the_local_models_output_cap_and_vendor_params_cannot_lift_it(stub):
    over = pb.ChatRequest(
        messages=[user("hi")], generation_config=generation_pb2.GenerationConfig(max_output_tokens=1025)
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(over, timeout=10)
    assert status_details(caught.value).violations == {
        "generation_config.max_output_tokens": "at most 1024 for model 'smollm2'"
    }
    sneaky = pb.ChatRequest(messages=[user("hi")])
    sneaky.vendor_params.update({"n_predict": 100000})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(sneaky, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "vendor_params.n_predict" in status_details(caught.value).violations


# --- metric labels stay bounded -----------------------------------------------------------------


def test_random_model_names_do_not_grow_the_metrics():
    env = isolated_env(
        AIGC_ALLOW_PASSTHROUGH="true", AIGC_LOCAL_ENABLED="false", AIGC_DEFAULT_MODEL="gpt-4o-mini"
    )
    del env["AIGC_METRICS_ADDRESS"]  # the server's own free port
    with running_server(env) as server, grpc.insecure_channel(server.address) as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        for i in range(300):
            # Half passthrough names (upstream known, no key: FAILED_PRECONDITION), half unknown.
            name = f"openai/random-{i}" if i % 2 else f"nobody-{i}"
            with pytest.raises(grpc.RpcError):
                stub.Chat(pb.ChatRequest(model=name, messages=[user("hi")]), timeout=10)
        with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=10) as response:
            page = response.read().decode()
    assert "random-" not in page and "nobody-" not in page
    assert 'model="openai/*"' in page
    assert len(page) < 200_000, f"/metrics is {len(page)} bytes after 300 random names"


# --- the local model's queue is bounded and says so ---------------------------------------


def test_a_full_local_queue_refuses_with_retry_info_and_frees_up():
    env = {"AIGC_LOCAL_PARALLEL": "1", "AIGC_LOCAL_QUEUE_TIMEOUT_SECONDS": "0.5"}
    with running_server(env) as server, grpc.insecure_channel(server.address) as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        # Greedy decoding runs to the 1000-token limit (~15 s): the slot stays busy
        # however fast the machine; sampled, the story may end in a second.
        long = pb.ChatRequest(
            messages=[user("Write a long story about the sea.")],
            generation_config=generation_pb2.GenerationConfig(max_output_tokens=1000, temperature=0),
        )
        holder = stub.StreamChat(long, timeout=60)
        next(holder)  # the one slot is decoding for this caller
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(pb.ChatRequest(messages=[user("hi")]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info, retry = error_info(caught.value), status_details(caught.value).retry_seconds
        assert info.reason == "UPSTREAM_RATE_LIMITED"
        assert "slots are all busy" in caught.value.details()
        assert retry == 1.0
        holder.cancel()
        time.sleep(0.3)
        small = pb.ChatRequest(
            messages=[user("hi")], generation_config=generation_pb2.GenerationConfig(max_output_tokens=2)
        )
        assert stub.Chat(small, timeout=30).usage.completion_tokens >= 1


# --- shutdown: what still runs when the grace ends is told so, in-band -----------------------


def test_streams_still_running_when_the_grace_ends_end_with_shutting_down(tmp_path):
    with LoopThread() as loop:
        vendor = FakeServer()
        loop.run(vendor.__aenter__())
        # The answer starts, then the vendor goes quiet (well within every upstream timeout).
        events = openai_fake.chat_events(["Once upon a time"], finish=None, usage=None)[:-1]
        vendor.script(Stream(events, end="hold"))
        try:
            config = write_config(
                tmp_path, f'[upstreams.openai]\nbase_url = "{vendor.base_url}/v1"\nmax_retries = 0\n'
            )
            env = isolated_env(
                AIGC_CONFIG=config, OPENAI_API_KEY="sk-shutdown", AIGC_SHUTDOWN_GRACE_SECONDS="1"
            )
            server = ServerProcess(env)
            try:
                server.wait_serving()
                with grpc.insecure_channel(server.address) as channel:
                    stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
                    stream = stub.StreamChat(
                        pb.ChatRequest(model="gpt-4o-mini", messages=[user("a story")]), timeout=30
                    )
                    first = next(stream)
                    assert first.message.parts[0].text == "Once upon a time"
                    server.proc.send_signal(signal.SIGTERM)
                    rest = []
                    with pytest.raises(grpc.RpcError) as caught:
                        for message in stream:
                            rest.append(message)
                assert server.proc.wait(timeout=20) == 0
            finally:
                server.stop()
        finally:
            loop.run(vendor.__aexit__(None, None, None))
    # In-band (what an SSE client reads) and as the status (what a gRPC client reads).
    assert rest[-1].finish_reason == generation_pb2.FINISH_REASON_ERROR
    assert rest[-1].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info, retry = error_info(caught.value), status_details(caught.value).retry_seconds
    assert info.reason == "SHUTTING_DOWN" and retry is not None
    assert "Traceback" not in server.output()


# --- Structs, patterns and NUL (issue 13, points 7, 8 and 11) -----------------------------


def _refused_fields(stub, request: pb.ChatRequest) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "Traceback" not in error.details()
    details = status_details(error)
    assert details.info is not None and details.info.reason == "INVALID_REQUEST"
    return details.violations


def _with_tool(parameters: dict) -> pb.ChatRequest:
    request = pb.ChatRequest(messages=[user("hi")])
    tool = request.tools.add()
    tool.function.name = "f"
    tool.function.parameters.update(parameters)
    return request


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["vendor_params", "tool parameters", "response schema"])
def test_nan_or_infinity_in_any_struct_is_invalid_argument_naming_the_field(stub, number, where):
    """Was INTERNAL with a traceback (json_format cannot write NaN as JSON)."""
    if where == "vendor_params":
        request = pb.ChatRequest(messages=[user("hi")])
        request.vendor_params.update({"a": {"b": [1, number]}})
        field = "vendor_params"
    elif where == "tool parameters":
        request = _with_tool({"type": "object", "properties": {"n": {"type": "number", "maximum": number}}})
        field = "tools[0].function.parameters"
    else:
        request = pb.ChatRequest(messages=[user("hi")])
        request.response_format.type = generation_pb2.ResponseFormat.TYPE_JSON_SCHEMA
        request.response_format.schema.update({"type": "object", "x": [number]})
        field = "response_format.schema"
    violations = _refused_fields(stub, request)
    assert list(violations) == [field], violations
    assert "NaN" in violations[field] and "Infinity" in violations[field]


@pytest.mark.parametrize(
    "pattern",
    ["^a{99999999999}$", "(a{1000}){1000}", "^(?=x)a$", "(a)\\1"],
    ids=["huge-count", "nested-counts", "lookahead", "backreference"],
)
def test_a_pattern_we_cannot_check_safely_is_invalid_argument(stub, pattern):
    """`^a{99999999999}$` was a 500 (re.compile's OverflowError in the schema check)."""
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}
    violations = _refused_fields(stub, _with_tool(schema))
    assert list(violations) == ["tools[0].function.parameters"]
    assert "pattern" in violations["tools[0].function.parameters"]
    keyed = {"type": "object", "patternProperties": {pattern: {"type": "string"}}}
    assert list(_refused_fields(stub, _with_tool(keyed))) == ["tools[0].function.parameters"]


def test_struct_nesting_is_bounded(stub):
    """One bound on every surface (the door's JSON too); arrays cost protobuf's parser
    fewer levels than objects, so 40 of them arrive over gRPC."""
    deep: list = [1]
    for _ in range(40):
        deep = [deep]
    request = pb.ChatRequest(messages=[user("hi")])
    request.vendor_params.update({"a": deep})
    violations = _refused_fields(stub, request)
    assert "nested deeper than 32" in violations["vendor_params"]


def test_nul_is_refused_in_every_string_field(stub):
    """NUL was refused in text, prompt and tool results only; 10 other fields carried it on."""
    request = pb.ChatRequest(
        model="smollm2",
        user_id="u\0",
        messages=[
            user("hi"),
            content_pb2.Message(
                role=content_pb2.ROLE_ASSISTANT,
                parts=[
                    content_pb2.Part(reasoning=content_pb2.Reasoning(text="r\0"), signature="s\0"),
                    content_pb2.Part(tool_call=content_pb2.ToolCall(id="c\0", name="f", arguments="{}")),
                ],
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_TOOL,
                parts=[
                    content_pb2.Part(tool_result=content_pb2.ToolResult(tool_call_id="c\0", content="ok"))
                ],
            ),
        ],
        generation_config=generation_pb2.GenerationConfig(stop_sequences=["x", "y\0"]),
    )
    tool = request.tools.add()
    tool.function.name = "f"
    tool.function.description = "d\0"
    request.vendor_params.update({"k": "v\0", "k\0": 1})
    violations = _refused_fields(stub, request)
    nul = "must not contain NUL (U+0000) characters"
    for field in (
        "user_id",
        "messages[1].parts[0].reasoning.text",
        "messages[1].parts[0].signature",
        "messages[1].parts[1].tool_call.id",
        "messages[2].parts[0].tool_result.tool_call_id",
        "generation_config.stop_sequences[1]",
        "tools[0].function.description",
    ):
        assert violations.get(field) == nul, (field, violations)
    assert "NUL" in violations["vendor_params"]


def test_every_http_surface_shares_one_header_limit():
    """The door's listener took 8 KiB headers (aiohttp's default), Envoy 60 KiB."""
    from gateway import render
    from server.core.limits import MAX_ANSWER_BYTES, MAX_REQUEST_HEADER_KB, MAX_REQUEST_HEADERS

    assert (render.MAX_REQUEST_HEADER_KB, render.MAX_REQUEST_HEADERS) == (
        MAX_REQUEST_HEADER_KB,
        MAX_REQUEST_HEADERS,
    )
    # The transcoder buffers every unary answer the server delivers (issue 13 point 10).
    assert render.MAX_ANSWER_BYTES == MAX_ANSWER_BYTES < render.MAX_RESPONSE_BODY_BYTES
