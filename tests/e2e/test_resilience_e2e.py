"""Faults injected at fake vendors, seen through the real server and Envoy: retries and
fallbacks happen only before the first chunk, say so in logs and metrics, never wait
longer than a caller would, and never send a piece of text twice.

Models (tests/e2e/conftest.py): `retry-model` (the OpenAI fake, max_retries = 2),
`claude-then-gpt` (the Anthropic fake, falling back to gpt-4o-mini on the OpenAI fake),
`stall-model` and `slow-model` for timeouts.
"""

from __future__ import annotations

import json
import time

import grpc
import pytest

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import content_pb2, generation_pb2
from tests.e2e.conftest import E2E, TIMEOUT, sse_events
from tests.fakes import anthropic_fake, openai_fake
from tests.fakes.http import Connection, FakeServer, Hang, Reply, Respond, Stream
from tests.support.content import json_text, text_of
from tests.support.status import status_details


class Drop(Reply):
    """Closes the connection without a response: a reset before the first byte."""

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        return False


def request(model: str) -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model, messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")]
    )


def ok(text: str = "fine") -> Stream:
    return openai_fake.stream(openai_fake.chat_events([text]))


def access_line(e2e: E2E, request_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in e2e.log().splitlines():
            if '"logger":"aigc.access"' in line and request_id in line:
                parsed = json.loads(line)
                if parsed.get("request_id") == request_id and "code" in parsed:
                    return parsed
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}")


def chat(e2e: E2E, model: str, **kwargs) -> tuple[pb.ChatResponse, str]:
    reply, call = e2e.stub.Chat.with_call(request(model), timeout=TIMEOUT, **kwargs)
    return reply, dict(call.initial_metadata())["x-request-id"]


# --- retries before the first chunk ------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        [openai_fake.error(429, "slow down", type="rate_limit_error", headers={"retry-after": "0.2"})],
        [
            openai_fake.error(503, "busy", type="server_error"),
            openai_fake.error(502, "bad gw", type="server_error"),
        ],
        [Drop()],
        [Stream([], end="cut")],
    ],
    ids=["429-retry-after", "5xx-burst", "reset", "200-then-cut-before-any-event"],
)
def test_a_busy_or_broken_vendor_is_retried_before_the_first_chunk(e2e: E2E, faults):
    e2e.fakes.openai.script(*faults, ok("after retries"))
    reply, request_id = chat(e2e, "retry-model")
    assert text_of(reply.message) == "after retries"
    assert len(e2e.fakes.openai.requests) == len(faults) + 1
    assert access_line(e2e, request_id)["retries"] == len(faults)


def test_a_long_retry_after_is_passed_to_the_caller_at_once(e2e: E2E):
    """A vendor asking for 7 s is not waited for on the caller's behalf (the limit is 5 s):
    the caller gets RESOURCE_EXHAUSTED and RetryInfo of 7 s after one attempt."""
    e2e.fakes.openai.script(
        openai_fake.error(429, "slow down", type="rate_limit_error", headers={"retry-after": "7"}), ok()
    )
    with pytest.raises(grpc.RpcError) as caught:
        e2e.stub.Chat(request("retry-model"), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_details(caught.value).retry_seconds == 7.0
    assert len(e2e.fakes.openai.requests) == 1, "no silent retries"


def test_retries_stop_at_max_retries(e2e: E2E):
    e2e.fakes.openai.script(*(openai_fake.error(500, "down", type="server_error") for _ in range(3)), ok())
    with pytest.raises(grpc.RpcError) as caught:
        e2e.stub.Chat(request("retry-model"), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(e2e.fakes.openai.requests) == 3  # one attempt and max_retries = 2


def test_a_stream_cut_after_its_first_chunk_is_never_retried_nor_repeated(e2e: E2E):
    events = openai_fake.chat_events(["Hello, ", "world"], finish=None, usage=None)[:-1]
    e2e.fakes.openai.script(Stream(events[:2], end="cut"), ok("Hello, world"))
    body = {"model": "retry-model", "messages": [{"role": "ROLE_USER", "content": "hi"}]}
    with e2e.http.stream("POST", "/v1/chat:streamGenerate", json=body) as response:
        events_seen = sse_events(response)
    assert "".join(json_text(e) for e in events_seen) == "Hello, "
    assert events_seen[-1]["finish_reason"] == "FINISH_REASON_ERROR"
    assert len(e2e.fakes.openai.requests) == 1


# --- fallbacks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        lambda: anthropic_fake.error(529, "overloaded_error", "Overloaded"),
        lambda: anthropic_fake.error(429, "rate_limit_error", "slow down", headers={"retry-after": "30"}),
        lambda: Respond(200, b"<html>gateway</html>", content_type="text/html"),
    ],
    ids=["529", "429-long-retry-after", "html"],
)
def test_the_fallback_answers_and_the_response_says_who(e2e: E2E, fault):
    e2e.fakes.anthropic.script(fault())
    e2e.fakes.openai.script(ok("from the fallback"))
    reply, request_id = chat(e2e, "claude-then-gpt")
    assert text_of(reply.message) == "from the fallback"
    assert (reply.model, reply.provider) == ("gpt-4o-mini", "openai")
    line = access_line(e2e, request_id)
    assert line["fallbacks"] == ["gpt-4o-mini"]
    assert line["code"] == "OK"


def test_a_fallback_in_a_stream_happens_before_anything_is_sent(e2e: E2E):
    e2e.fakes.anthropic.script(anthropic_fake.error(500, "api_error", "boom"))
    e2e.fakes.openai.script(ok("streamed by the fallback"))
    messages = list(e2e.stub.StreamChat(request("claude-then-gpt"), timeout=TIMEOUT))
    assert "".join(text_of(m.message) for m in messages) == "streamed by the fallback"
    assert {m.model for m in messages} == {"gpt-4o-mini"}
    assert messages[-1].finish_reason == generation_pb2.FINISH_REASON_STOP


def test_once_the_first_model_streamed_there_is_no_fallback(e2e: E2E):
    events = anthropic_fake.answer([anthropic_fake.text_block(0, ["Bonjour"])])
    e2e.fakes.anthropic.script(anthropic_fake.stream(events[:5], end="cut"))  # up to the delta
    e2e.fakes.openai.script(ok("must not be asked"))
    messages = []
    with pytest.raises(grpc.RpcError) as caught:
        for message in e2e.stub.StreamChat(request("claude-then-gpt"), timeout=TIMEOUT):
            messages.append(message)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "".join(text_of(m.message) for m in messages) == "Bonjour"
    assert not e2e.fakes.openai.requests


def test_a_bad_request_does_not_fall_back(e2e: E2E):
    e2e.fakes.anthropic.script(anthropic_fake.error(400, "invalid_request_error", "bad"))
    with pytest.raises(grpc.RpcError) as caught:
        e2e.stub.Chat(request("claude-then-gpt"), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not e2e.fakes.openai.requests


# --- the HTTP caller's own timeout ------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [("grpc-timeout", "1S"), ("x-aigc-timeout", "1"), ("x-aigc-timeout", "1.0s")]
)
def test_an_http_callers_timeout_becomes_the_deadline(e2e: E2E, header):
    e2e.fakes.openai.script(Hang())
    body = {"model": "gpt-4o-mini", "messages": [{"role": "ROLE_USER", "content": "hi"}]}
    began = time.monotonic()
    response = e2e.http.post("/v1/chat:generate", json=body, headers=dict([header]))
    took = time.monotonic() - began
    assert response.status_code == 504, response.text
    info = response.json()["details"][0]
    assert (info["reason"], info["metadata"]["timeout"]) == ("UPSTREAM_TIMEOUT", "deadline")
    assert took < TIMEOUT / 2, "the caller's 1 s, not the upstream's 20 s"
    assert e2e.fakes.openai.wait_client_gone(), "the upstream call was abandoned"


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan", "1e9"])
def test_a_bad_timeout_header_is_invalid_argument(e2e: E2E, value):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "ROLE_USER", "content": "hi"}]}
    response = e2e.http.post("/v1/chat:generate", json=body, headers={"x-aigc-timeout": value})
    assert response.status_code == 400, response.text
    violations = [d for d in response.json()["details"] if d["@type"].endswith("BadRequest")]
    assert violations[0]["field_violations"][0]["field"] == "x-aigc-timeout header"
    assert not e2e.fakes.openai.requests
