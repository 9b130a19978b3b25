"""A chat through each provider kind, end to end: gRPC and Envoy REST/SSE, unary and streamed.

The real stack (tests/e2e/conftest.py) routes `gpt-4o-mini` (openai preset),
`qwen-plus` (qwen preset, OpenAI-compatible), `gemini-2.0-flash` and
`claude-haiku-4-5` to fake vendor servers speaking each wire format. Every
answer is Chinese, and the fake splits the UTF-8 bytes of one character
across two network writes. Usage in the last message must be exactly what the
fake reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import content_pb2, generation_pb2
from tests.e2e.conftest import E2E, KEYS, TIMEOUT, Either, Fake, is_stream_request, sse_events
from tests.fakes import anthropic_fake, gemini_fake, openai_fake
from tests.fakes.http import Reply, Stream, split_inside
from tests.support.content import json_text, text_of

PIECES = ["你好", "，世界", "！"]
TEXT = "".join(PIECES)
SPLIT_CHAR = "世"  # its 3 UTF-8 bytes go out in two writes
USAGE = (11, 6)
PAUSE = 0.02  # between stream writes, so they are separate reads


def split_char(events: list[bytes]) -> list[bytes]:
    """`events` with the one holding SPLIT_CHAR cut in two inside that character."""
    out: list[bytes] = []
    for piece in events:
        out += split_inside(piece, SPLIT_CHAR) if SPLIT_CHAR.encode() in piece else [piece]
    assert len(out) == len(events) + 1
    return out


@dataclasses.dataclass(frozen=True)
class Kind:
    provider: str
    model: str
    fake: str  # attribute of Fakes
    answer: Callable[[], Reply]  # TEXT in PIECES with USAGE, finish "stop"
    cut: Callable[[], Reply]  # the first two pieces, then the connection closes


KINDS = [
    Kind(
        "openai",
        "gpt-4o-mini",
        "openai",
        lambda: Either(
            openai_fake.chat(TEXT, usage=USAGE),
            openai_fake.stream(split_char(openai_fake.chat_events(PIECES, usage=USAGE)), pause=PAUSE),
        ),
        # role chunk, "你好", "，世界", then the socket closes: no finish, no [DONE].
        lambda: openai_fake.stream(openai_fake.chat_events(PIECES)[:3], end="cut", pause=PAUSE),
    ),
    Kind(
        "qwen",
        "qwen-plus",
        "openai",
        lambda: Either(
            openai_fake.chat(TEXT, usage=USAGE),
            openai_fake.stream(split_char(openai_fake.chat_events(PIECES, usage=USAGE)), pause=PAUSE),
        ),
        lambda: openai_fake.stream(openai_fake.chat_events(PIECES)[:3], end="cut", pause=PAUSE),
    ),
    Kind(
        "gemini",
        "gemini-2.0-flash",
        "gemini",
        lambda: Either(
            gemini_fake.generate(TEXT, usage=USAGE),
            gemini_fake.stream(split_char(gemini_fake.stream_events(PIECES, usage=USAGE)), pause=PAUSE),
        ),
        lambda: gemini_fake.stream(gemini_fake.stream_events(PIECES)[:2], end="cut", pause=PAUSE),
    ),
    Kind(
        "anthropic",
        "claude-haiku-4-5",
        "anthropic",
        lambda: Either(
            anthropic_fake.message(TEXT, usage=USAGE),
            anthropic_fake.stream(
                split_char(anthropic_fake.message_events(PIECES, usage=USAGE)), pause=PAUSE
            ),
        ),
        # message_start, content_block_start, ping, two deltas; no message_stop.
        lambda: anthropic_fake.stream(anthropic_fake.message_events(PIECES)[:5], end="cut", pause=PAUSE),
    ),
]
IDS = [kind.provider for kind in KINDS]


def fake_of(e2e: E2E, kind: Kind) -> Fake:
    return getattr(e2e.fakes, kind.fake)


def chat_request(model: str) -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model,
        messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="用一句话打个招呼")],
        generation_config=generation_pb2.GenerationConfig(max_output_tokens=32),
    )


def chat_body(model: str) -> dict:
    return {
        "model": model,
        "messages": [{"role": "ROLE_USER", "content": "用一句话打个招呼"}],
        "generation_config": {"max_output_tokens": 32},
    }


def check_upstream_request(e2e: E2E, kind: Kind) -> None:
    """The vendor got one request, on its streaming endpoint (unary calls too: README, "Cancellation
    and deadlines reach the vendor"), for its own model name, with our key in its own header."""
    (request,) = fake_of(e2e, kind).requests
    assert is_stream_request(request), request.path
    if kind.fake == "openai":
        key = KEYS["DASHSCOPE_API_KEY"] if kind.provider == "qwen" else KEYS["OPENAI_API_KEY"]
        assert request.path.startswith("/v1/chat/completions")
        assert request.json()["model"] == kind.model
        assert request.headers["authorization"] == f"Bearer {key}"
    elif kind.fake == "gemini":
        assert request.path.startswith(f"/v1beta/models/{kind.model}:")
        assert request.headers["x-goog-api-key"] == KEYS["GEMINI_API_KEY"]
    else:
        assert request.path.startswith("/v1/messages")
        assert request.json()["model"] == kind.model
        assert request.headers["x-api-key"] == KEYS["ANTHROPIC_API_KEY"]
    assert "用一句话打个招呼" in request.body.decode()


def check_usage(usage: pb.Usage | dict) -> None:
    if isinstance(usage, dict):
        got = (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
    else:
        got = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    assert got == (USAGE[0], USAGE[1], sum(USAGE))


# --- gRPC -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_grpc_chat(e2e: E2E, kind: Kind) -> None:
    fake_of(e2e, kind).script(kind.answer())
    reply = e2e.stub.Chat(chat_request(kind.model), timeout=TIMEOUT)
    assert reply.model == kind.model
    assert reply.provider == kind.provider
    assert reply.id
    assert reply.create_time.seconds > 0
    assert reply.message.role == content_pb2.ROLE_ASSISTANT
    assert text_of(reply.message) == TEXT
    assert reply.finish_reason == generation_pb2.FINISH_REASON_STOP
    check_usage(reply.usage)
    assert not reply.HasField("error")
    check_upstream_request(e2e, kind)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_grpc_stream_chat(e2e: E2E, kind: Kind) -> None:
    fake_of(e2e, kind).script(kind.answer())
    messages = list(e2e.stub.StreamChat(chat_request(kind.model), timeout=TIMEOUT))
    assert len(messages) >= 2
    assert "".join(text_of(m.message) for m in messages) == TEXT
    assert {m.id for m in messages} == {messages[0].id} and messages[0].id
    assert {(m.model, m.provider) for m in messages} == {(kind.model, kind.provider)}
    *body, last = messages
    assert all(m.finish_reason == generation_pb2.FINISH_REASON_UNSPECIFIED for m in body)
    assert all(not m.HasField("usage") for m in body)
    assert last.finish_reason == generation_pb2.FINISH_REASON_STOP
    check_usage(last.usage)
    assert not last.HasField("error")
    check_upstream_request(e2e, kind)


def test_list_models_shows_presets_and_readiness_never_keys(e2e: E2E) -> None:
    reply = e2e.stub.ListModels(pb.ListModelsRequest(page_size=1000), timeout=TIMEOUT)
    models = {m.id: m for m in reply.models}
    ready = {"gpt-4o-mini", "gpt-4o", "qwen-plus", "gemini-2.0-flash", "claude-haiku-4-5"}
    not_ready = {"deepseek-chat", "ernie-4.0-8k", "ernie-3.5-8k", "glm-4-flash", "moonshot-v1-8k"}
    assert ready | not_ready <= set(models)
    assert all(models[name].ready for name in ready)
    assert not any(models[name].ready for name in not_ready)
    assert models["gpt-4o-mini"].is_default
    providers = {models[name].provider for name in not_ready}
    assert providers == {"deepseek", "ernie", "zhipu", "moonshot"}
    assert "ernie-bot-4" in models["ernie-4.0-8k"].aliases
    assert "kimi" in models["moonshot-v1-8k"].aliases
    raw = reply.SerializeToString()
    http = e2e.http.get("/v1/models", params={"page_size": 1000})
    assert http.status_code == 200
    assert {m["id"] for m in http.json()["models"]} == set(models)
    for key in KEYS.values():
        assert key.encode() not in raw
        assert key not in http.text


# --- Envoy REST / SSE ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_http_chat(e2e: E2E, kind: Kind) -> None:
    fake_of(e2e, kind).script(kind.answer())
    response = e2e.http.post("/v1/chat:generate", json=chat_body(kind.model))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"id", "model", "provider", "create_time", "message", "finish_reason", "usage"}
    assert (body["model"], body["provider"]) == (kind.model, kind.provider)
    assert body["message"] == {"role": "ROLE_ASSISTANT", "parts": [{"text": TEXT}]}
    assert body["finish_reason"] == "FINISH_REASON_STOP"
    check_usage(body["usage"])
    check_upstream_request(e2e, kind)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_http_stream_chat_is_sse(e2e: E2E, kind: Kind) -> None:
    fake_of(e2e, kind).script(kind.answer())
    with e2e.http.stream("POST", "/v1/chat:streamGenerate", json=chat_body(kind.model)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        events = sse_events(response)
    assert len(events) >= 2
    assert "".join(json_text(e) for e in events) == TEXT
    identities = {(e["id"], e["model"], e["provider"]) for e in events}
    assert identities == {(events[0]["id"], kind.model, kind.provider)}
    *body, last = events
    assert all("finish_reason" not in e and "usage" not in e for e in body)
    assert last["finish_reason"] == "FINISH_REASON_STOP"
    check_usage(last["usage"])
    assert "error" not in last
    check_upstream_request(e2e, kind)


# --- a stream cut mid-way: the in-band guarantee -----------------------------------------------------


def error_info(status) -> error_details_pb2.ErrorInfo:
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
    (info,) = infos
    return info


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_grpc_stream_cut_mid_way_ends_in_band_and_with_the_same_status(e2e: E2E, kind: Kind) -> None:
    fake_of(e2e, kind).script(kind.cut())
    messages = []
    with pytest.raises(grpc.RpcError) as caught:
        for message in e2e.stub.StreamChat(chat_request(kind.model), timeout=TIMEOUT):
            messages.append(message)
    assert "".join(text_of(m.message) for m in messages) == "你好，世界"
    last = messages[-1]
    assert last.finish_reason == generation_pb2.FINISH_REASON_ERROR
    # No `usage`: the vendor's counts never came (the proto has no "not reported" marker).
    assert not last.HasField("usage")
    assert last.error.code == code_pb2.UNAVAILABLE
    info = error_info(last.error)
    assert (info.reason, info.domain) == ("UPSTREAM_STREAM_INTERRUPTED", "aigc-service")
    assert info.metadata["provider"] == kind.provider
    assert info.metadata["request_id"]
    # The RPC ends with that same status.
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert status.code == last.error.code and status.message == last.error.message
    assert error_info(status).reason == "UPSTREAM_STREAM_INTERRUPTED"


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_sse_stream_cut_mid_way_carries_the_error_in_the_last_event(e2e: E2E, kind: Kind) -> None:
    fake_of(e2e, kind).script(kind.cut())
    with e2e.http.stream("POST", "/v1/chat:streamGenerate", json=chat_body(kind.model)) as response:
        # The stream had started: HTTP 200, and the failure is in-band.
        assert response.status_code == 200
        events = sse_events(response)
    assert "".join(json_text(e) for e in events) == "你好，世界"
    last = events[-1]
    assert last["finish_reason"] == "FINISH_REASON_ERROR"
    assert last["error"]["code"] == code_pb2.UNAVAILABLE
    (info,) = [d for d in last["error"]["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info["reason"] == "UPSTREAM_STREAM_INTERRUPTED"
    assert info["domain"] == "aigc-service"
    assert info["metadata"]["provider"] == kind.provider
    assert info["metadata"]["request_id"] == response.headers["x-request-id"]
    assert all("error" not in e for e in events[:-1])


# --- a stream that stalls mid-way, with no caller deadline ----------------------------------------


def _stalling(e2e: E2E) -> None:
    """The answer starts, then the vendor sends nothing more and keeps the connection open."""
    events = openai_fake.chat_events(["你好"], finish=None, usage=None)[:-1]
    e2e.fakes.openai.script(Stream(events, end="hold"))


def test_sse_stream_that_stalls_ends_in_band_with_the_idle_timeout(e2e: E2E) -> None:
    _stalling(e2e)
    body = {"model": "stall-model", "messages": [{"role": "ROLE_USER", "content": "hi"}]}
    with e2e.http.stream("POST", "/v1/chat:streamGenerate", json=body) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert "".join(json_text(e) for e in events) == "你好"
    last = events[-1]
    assert last["finish_reason"] == "FINISH_REASON_ERROR"
    (info,) = [d for d in last["error"]["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert (info["reason"], info["metadata"]["timeout"]) == ("UPSTREAM_TIMEOUT", "idle")
    assert e2e.fakes.openai.wait_client_gone(), "the stalled upstream connection was closed"


def test_grpc_stream_that_stalls_ends_with_the_idle_timeout(e2e: E2E) -> None:
    _stalling(e2e)
    messages = []
    request = pb.ChatRequest(
        model="stall-model", messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")]
    )
    with pytest.raises(grpc.RpcError) as caught:
        for message in e2e.stub.StreamChat(request):  # no deadline
            messages.append(message)
    assert messages[-1].finish_reason == generation_pb2.FINISH_REASON_ERROR
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    info = error_info(rpc_status.from_call(caught.value))
    assert (info.reason, info.metadata["timeout"]) == ("UPSTREAM_TIMEOUT", "idle")
