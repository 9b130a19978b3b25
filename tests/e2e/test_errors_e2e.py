"""Every row of the README's error table, end to end through the real server and Envoy.

Each case is one vendor (or service) condition, scripted on a fake vendor,
and asserted the way a caller meets it: gRPC `Chat` and `StreamChat` (code,
google.rpc.Status with ErrorInfo reason/domain/metadata, RetryInfo), and
HTTP through Envoy, unary and SSE (HTTP status and the Status JSON body).
A stream that fails before its first message is an ordinary error on every
transport; tests/e2e/test_providers_e2e.py covers failures after the start.

`INTERNAL` (a bug in our code) is the one row not asserted here: nothing a
caller or a vendor can do triggers it without breaking the server's code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import content_pb2, generation_pb2
from tests.e2e.conftest import E2E, KEYS, TIMEOUT, Either
from tests.fakes import anthropic_fake, gemini_fake, openai_fake
from tests.fakes.http import Hang, Reply, Respond

C = grpc.StatusCode
HTTP_OF = {
    C.INVALID_ARGUMENT: 400,
    C.FAILED_PRECONDITION: 400,
    C.NOT_FOUND: 404,
    C.DEADLINE_EXCEEDED: 504,
    C.RESOURCE_EXHAUSTED: 429,
    C.UNAVAILABLE: 503,
    C.INTERNAL: 500,
}
OPENAI_KEY = KEYS["OPENAI_API_KEY"]
MODELS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.0-flash", "anthropic": "claude-haiku-4-5"}
TRANSPORTS = ["grpc-unary", "grpc-stream", "http-unary", "http-sse"]


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    provider: str  # which fake answers; also the ErrorInfo `provider`
    reply: Callable[[], Reply]
    code: grpc.StatusCode
    reason: str
    upstream_status: int | None = None
    upstream_request_id: str | None = None
    retry_after: float | None = None  # seconds in RetryInfo
    model: str = ""  # default: MODELS[provider]


def _openai_malformed() -> Reply:
    return Either(
        Respond(200, b"{not json", content_type="application/json"),
        openai_fake.stream([b"data: {not json\n\n", openai_fake.DONE]),
    )


def _gemini_blocked() -> Reply:
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    return Either(Respond(200, body), gemini_fake.stream([gemini_fake.event(body)]))


UPSTREAM_CASES = [
    # UPSTREAM_INVALID_REQUEST
    Case("openai-400", "openai", lambda: openai_fake.error(400, "temperature: bad"),
         C.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST", 400, "req-400"),
    Case("gemini-400", "gemini", lambda: gemini_fake.error(400, "INVALID_ARGUMENT", "bad topK"),
         C.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST", 400),
    Case("anthropic-400", "anthropic",
         lambda: anthropic_fake.error(400, "invalid_request_error", "max_tokens: too big"),
         C.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST", 400, "req_400"),
    # CONTEXT_LENGTH_EXCEEDED
    Case("openai-400-context", "openai",
         lambda: openai_fake.error(400, "maximum context length is 128000", code="context_length_exceeded"),
         C.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED", 400, "req-400"),
    Case("anthropic-413", "anthropic",
         lambda: anthropic_fake.error(413, "request_too_large", "Request exceeds the maximum size"),
         C.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED", 413, "req_413"),
    Case("gemini-413", "gemini",
         lambda: gemini_fake.error(413, "INVALID_ARGUMENT", "Request payload size exceeds the limit"),
         C.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED", 413),
    # CONTENT_FILTERED
    Case("openai-content-filter", "openai",
         lambda: openai_fake.error(400, "flagged by the content filter", code="content_filter"),
         C.INVALID_ARGUMENT, "CONTENT_FILTERED", 400, "req-400"),
    Case("gemini-blocked-prompt", "gemini", _gemini_blocked, C.INVALID_ARGUMENT, "CONTENT_FILTERED"),
    # UPSTREAM_AUTH_FAILED: the vendor echoes our key; it must not reach the caller.
    Case("openai-401", "openai",
         lambda: openai_fake.error(401, f"Incorrect API key provided: {OPENAI_KEY}", code="invalid_api_key"),
         C.INTERNAL, "UPSTREAM_AUTH_FAILED", 401, "req-401"),
    Case("gemini-401", "gemini",
         lambda: gemini_fake.error(401, "UNAUTHENTICATED", f"bad key {KEYS['GEMINI_API_KEY']}"),
         C.INTERNAL, "UPSTREAM_AUTH_FAILED", 401),
    Case("anthropic-401", "anthropic",
         lambda: anthropic_fake.error(401, "authentication_error", f"bad key {KEYS['ANTHROPIC_API_KEY']}"),
         C.INTERNAL, "UPSTREAM_AUTH_FAILED", 401, "req_401"),
    # UPSTREAM_MODEL_NOT_FOUND
    Case("openai-404", "openai",
         lambda: openai_fake.error(404, "The model does not exist", code="model_not_found"),
         C.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND", 404, "req-404"),
    Case("gemini-404", "gemini", lambda: gemini_fake.error(404, "NOT_FOUND", "models/x is not found"),
         C.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND", 404),
    Case("anthropic-404", "anthropic", lambda: anthropic_fake.error(404, "not_found_error", "model: x"),
         C.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND", 404, "req_404"),
    # UPSTREAM_RATE_LIMITED + RetryInfo
    Case("openai-429", "openai",
         lambda: openai_fake.error(429, "Rate limit reached", type="requests", headers={"retry-after": "7"}),
         C.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", 429, "req-429", retry_after=7),
    Case("gemini-429", "gemini",
         lambda: gemini_fake.error(429, "RESOURCE_EXHAUSTED", "quota", retry_delay="30s"),
         C.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", 429, retry_after=30),
    Case("anthropic-429", "anthropic",
         lambda: anthropic_fake.error(429, "rate_limit_error", "slow down", headers={"retry-after": "12"}),
         C.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", 429, "req_429", retry_after=12),
    # UPSTREAM_SERVER_ERROR (max_retries = 0 in the config: one scripted 5xx is enough)
    Case("openai-500", "openai", lambda: openai_fake.error(500, "server error", type="server_error"),
         C.UNAVAILABLE, "UPSTREAM_SERVER_ERROR", 500, "req-500"),
    Case("gemini-500", "gemini", lambda: gemini_fake.error(500, "INTERNAL", "oops"),
         C.UNAVAILABLE, "UPSTREAM_SERVER_ERROR", 500),
    Case("anthropic-529", "anthropic", lambda: anthropic_fake.error(529, "overloaded_error", "Overloaded"),
         C.UNAVAILABLE, "UPSTREAM_SERVER_ERROR", 529, "req_529"),
    # UPSTREAM_STREAM_INTERRUPTED before any text: the body ends without the end marker.
    Case("openai-cut", "openai", lambda: openai_fake.stream([], end="cut"),
         C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED"),
    # UPSTREAM_MALFORMED_RESPONSE
    Case("openai-malformed", "openai", _openai_malformed, C.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE"),
    Case("gemini-malformed", "gemini",
         lambda: Either(Respond(200, b"{not json"), gemini_fake.stream([b"data: {not json\r\n\r\n"])),
         C.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE"),
    Case("anthropic-malformed", "anthropic",
         lambda: Either(Respond(200, b"{not json"),
                        anthropic_fake.stream([b"event: message_start\ndata: {not json\n\n"])),
         C.INTERNAL, "UPSTREAM_MALFORMED_RESPONSE"),
    # UPSTREAM_TIMEOUT: the `slow` upstream (the OpenAI fake, timeout_seconds = 1) never answers.
    Case("slow-hang", "openai", Hang, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", model="slow-model"),
]  # fmt: skip


@dataclasses.dataclass
class Failure:
    """What a caller got: the Status (gRPC trailers or HTTP body as JSON) and the messages before it."""

    code: grpc.StatusCode
    message: str
    info: dict[str, Any]
    retry_delay: float | None
    bad_fields: set[str]
    request_id: str  # from the response (HTTP header) or "" over gRPC
    received: int  # stream messages before the error


def _from_status(status: status_pb2.Status, received: int = 0) -> Failure:
    info, delay, fields = {}, None, set()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            unpacked = error_details_pb2.ErrorInfo()
            detail.Unpack(unpacked)
            assert not info, "more than one ErrorInfo"
            info = {"reason": unpacked.reason, "domain": unpacked.domain, "metadata": dict(unpacked.metadata)}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = {v.field for v in bad.field_violations}
    code = {c.value[0]: c for c in C}[status.code]
    return Failure(code, status.message, info, delay, fields, "", received)


def _from_json(body: dict[str, Any], request_id: str) -> Failure:
    info, delay, fields = {}, None, set()
    for detail in body.get("details", []):
        kind = detail["@type"].rpartition("/")[2]
        if kind == "google.rpc.ErrorInfo":
            assert not info, "more than one ErrorInfo"
            info = {k: detail.get(k, {}) for k in ("reason", "domain", "metadata")}
        elif kind == "google.rpc.RetryInfo":
            delay = float(detail["retry_delay"].rstrip("s"))
        elif kind == "google.rpc.BadRequest":
            fields = {v["field"] for v in detail["field_violations"]}
    code = {c.value[0]: c for c in C}[body["code"]]
    return Failure(code, body["message"], info, delay, fields, request_id, 0)


def call(e2e: E2E, transport: str, body: dict[str, Any], *, timeout: float = TIMEOUT) -> Failure:
    """Sends a ChatRequest (as JSON `body`) on `transport`, expecting it to fail."""
    if transport.startswith("grpc"):
        request = pb.ChatRequest(
            model=body.get("model", ""),
            messages=[
                content_pb2.Message(role=content_pb2.Role.Value(m["role"]), content=m["content"])
                for m in body.get("messages", [])
            ],
            generation_config=generation_pb2.GenerationConfig(**body.get("generation_config", {})),
        )
        received = []
        with pytest.raises(grpc.RpcError) as caught:
            if transport == "grpc-unary":
                e2e.stub.Chat(request, timeout=timeout)
            else:
                received.extend(e2e.stub.StreamChat(request, timeout=timeout))
        status = rpc_status.from_call(caught.value)
        assert status is not None, (caught.value.code(), caught.value.details())
        assert status.code == caught.value.code().value[0]
        # Failing before its first message, a stream sends nothing but the error.
        assert received == []
        return _from_status(status)
    path = "/v1/chat:generate" if transport == "http-unary" else "/v1/chat:streamGenerate"
    response = e2e.http.post(path, json=body, timeout=timeout)
    assert response.headers["content-type"].startswith("application/json"), response.text
    failure = _from_json(response.json(), response.headers.get("x-request-id", ""))
    assert response.status_code == HTTP_OF[failure.code], (response.status_code, response.text)
    return failure


def chat_body(model: str, content: str = "你好") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "ROLE_USER", "content": content}],
        "generation_config": {"max_output_tokens": 16},
    }


def check(failure: Failure, code: grpc.StatusCode, reason: str, **metadata: str) -> None:
    assert failure.code == code, failure
    assert failure.info["reason"] == reason, failure
    assert failure.info["domain"] == "aigc-service"
    assert failure.info["metadata"]["request_id"]
    if failure.request_id:  # over HTTP: the same id as the response header
        assert failure.info["metadata"]["request_id"] == failure.request_id
    for name, value in metadata.items():
        assert failure.info["metadata"].get(name) == value, (name, failure.info)
    for key in KEYS.values():
        assert key not in failure.message


# --- vendor failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", UPSTREAM_CASES, ids=[c.id for c in UPSTREAM_CASES])
def test_upstream_failure(e2e: E2E, case: Case, transport: str) -> None:
    fake = getattr(e2e.fakes, case.provider)
    fake.script(case.reply())
    failure = call(e2e, transport, chat_body(case.model or MODELS[case.provider]))
    provider = "slow" if case.model == "slow-model" else case.provider
    check(failure, case.code, case.reason, provider=provider)
    metadata = failure.info["metadata"]
    if case.upstream_status is None:
        assert metadata["upstream_status"] == "", metadata  # present, empty (AIP-193)
    else:
        assert metadata["upstream_status"] == str(case.upstream_status)
    if case.upstream_request_id is not None:
        assert metadata["upstream_request_id"] == case.upstream_request_id
    if case.retry_after is None:
        assert failure.retry_delay is None
    else:
        assert failure.retry_delay is not None and abs(failure.retry_delay - case.retry_after) <= 1
    # Exactly one upstream call: retries are off (max_retries = 0) and the service never retries.
    assert len(fake.requests) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unreachable_upstream(e2e: E2E, transport: str) -> None:
    failure = call(e2e, transport, chat_body("dead-model"))
    check(failure, C.UNAVAILABLE, "UPSTREAM_UNREACHABLE", provider="dead")
    assert failure.info["metadata"]["upstream_status"] == ""  # no HTTP response at all


def test_error_event_inside_a_200_stream_is_a_server_error(e2e: E2E) -> None:
    fake = e2e.fakes.anthropic
    fake.script(anthropic_fake.stream([anthropic_fake.error_event("api_error", "Internal server error")]))
    failure = call(e2e, "grpc-stream", chat_body(MODELS["anthropic"]))
    check(failure, C.UNAVAILABLE, "UPSTREAM_SERVER_ERROR", provider="anthropic")
    assert failure.info["metadata"]["upstream_status"] == ""


def test_keys_never_reach_the_logs(e2e: E2E) -> None:
    """After 401s whose vendor messages echo our keys, no key is in the server's or Envoy's output."""
    for case in (c for c in UPSTREAM_CASES if c.id.endswith("-401")):
        getattr(e2e.fakes, case.provider).script(case.reply())
        call(e2e, "grpc-unary", chat_body(MODELS[case.provider]))
    log = e2e.log()
    assert "UPSTREAM_AUTH_FAILED" in log  # the failures were logged...
    for key in KEYS.values():
        assert key not in log  # ...without the keys


# --- the service's own errors -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invalid_request_lists_every_bad_field(e2e: E2E, transport: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": [], "generation_config": {"temperature": 9}}
    failure = call(e2e, transport, body)
    check(failure, C.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert failure.bad_fields == {"messages", "generation_config.temperature"}
    assert e2e.fakes.openai.requests == []


@pytest.mark.parametrize("path", ["/v1/chat:generate", "/v1/chat:streamGenerate"])
def test_malformed_request_body_over_http(e2e: E2E, path: str) -> None:
    response = e2e.http.post(path, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert response.status_code == 400
    failure = _from_json(response.json(), response.headers.get("x-request-id", ""))
    check(failure, C.INVALID_ARGUMENT, "MALFORMED_REQUEST_BODY")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_model_not_found(e2e: E2E, transport: str) -> None:
    failure = call(e2e, transport, chat_body("模型-不存在"))
    check(failure, C.NOT_FOUND, "MODEL_NOT_FOUND", model="模型-不存在")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("model", "provider", "variable"),
    [
        ("deepseek-chat", "deepseek", "DEEPSEEK_API_KEY"),
        ("ernie-bot", "ernie", "QIANFAN_API_KEY"),  # an alias
        ("glm-4-flash", "zhipu", "ZHIPUAI_API_KEY"),
        ("kimi", "moonshot", "MOONSHOT_API_KEY"),
    ],
)
def test_provider_not_configured_names_the_variable(
    e2e: E2E, transport: str, model: str, provider: str, variable: str
) -> None:
    failure = call(e2e, transport, chat_body(model))
    check(failure, C.FAILED_PRECONDITION, "PROVIDER_NOT_CONFIGURED", provider=provider)
    assert variable in failure.message


def test_caller_deadline_over_grpc_reaches_the_vendor(e2e: E2E) -> None:
    e2e.fakes.openai.script(Hang())
    request = pb.ChatRequest(
        model="gpt-4o-mini", messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")]
    )
    with pytest.raises(grpc.RpcError) as caught:
        e2e.stub.Chat(request, timeout=1)
    assert caught.value.code() == C.DEADLINE_EXCEEDED
    # The server gives up a little before the caller's deadline (service._Call.timeout),
    # so its full Status - ErrorInfo, request id - arrives before the client's own timer.
    status = rpc_status.from_call(caught.value)
    assert status is not None, "bare DEADLINE_EXCEEDED: the server's Status lost the race"
    check(_from_status(status), C.DEADLINE_EXCEEDED, _deadline_reason(status))
    # The upstream request was abandoned: the server closed its connection to the vendor.
    assert e2e.fakes.openai.wait_client_gone(timeout=5)


def _deadline_reason(status: status_pb2.Status) -> str:
    reason = _from_status(status).info["reason"]
    assert reason in ("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT")
    return reason


@pytest.mark.parametrize("path", ["/v1/chat:generate", "/v1/chat:streamGenerate"])
def test_caller_deadline_over_http_is_504(e2e: E2E, path: str) -> None:
    e2e.fakes.openai.script(Hang())
    response = e2e.http.post(path, json=chat_body("gpt-4o-mini"), headers={"grpc-timeout": "1S"})
    assert response.status_code == 504, response.text
    body = response.json()
    assert body["code"] == C.DEADLINE_EXCEEDED.value[0]
    # Envoy forwards grpc-timeout; the server gives up a little before it expires, so the
    # body is the full Status, never a bare {"code": 4, "message": "Deadline Exceeded"}.
    assert "details" in body, body
    (info,) = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info["reason"] in ("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT")
    assert info["domain"] == "aigc-service"
    assert info["metadata"]["request_id"] == response.headers["x-request-id"]
    assert e2e.fakes.openai.wait_client_gone(timeout=5)
