"""One answer-size rule on every surface (issue 13, point 10): a unary answer of 20 MB was
a REST 500 "Gateway error" (Envoy's transcoder buffered at most 16 MiB) after the vendor
had been paid, while gRPC, SSE and the OpenAI door delivered it. Now a unary answer up to
MAX_ANSWER_BYTES is delivered on gRPC, REST and the door alike, and a larger one is refused
alike (OUT_OF_RANGE, ANSWER_TOO_LARGE) as soon as it passes the limit - the vendor's stream
is closed there, not read to its end. Streams have no such limit.
"""

from __future__ import annotations

import grpc
import httpx
import pytest

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2
from server.core.limits import MAX_ANSWER_BYTES
from tests.e2e.conftest import E2E
from tests.fakes import openai_fake
from tests.support.status import error_info

PIECE = 1024 * 1024
BIG = 20 * 1024 * 1024


def _script(e2e: E2E, total: int) -> None:
    pieces = ["a" * PIECE] * (total // PIECE)
    e2e.fakes.openai.script(openai_fake.stream(openai_fake.chat_events(pieces)))


def _grpc_chat(e2e: E2E) -> pb.ChatResponse:
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(e2e.stack.grpc_address, options=options) as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        request = pb.ChatRequest(
            model="gpt-4o-mini", messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")]
        )
        return stub.Chat(request, timeout=60)


def _rest_chat(e2e: E2E) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "ROLE_USER", "content": "hi"}]}
    return e2e.http.post("/v1/chat:generate", json=body, timeout=60)


def _door_chat(e2e: E2E) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return e2e.http.post("/openai/v1/chat/completions", json=body, timeout=60)


@pytest.mark.parametrize("surface", ["grpc", "rest", "door"])
def test_a_20_mb_unary_answer_is_delivered_on_every_surface(e2e: E2E, surface: str):
    _script(e2e, BIG)
    if surface == "grpc":
        text = _grpc_chat(e2e).message.parts[0].text
    elif surface == "rest":
        resp = _rest_chat(e2e)
        assert resp.status_code == 200, resp.text[:300]
        text = resp.json()["message"]["parts"][0]["text"]
    else:
        resp = _door_chat(e2e)
        assert resp.status_code == 200, resp.text[:300]
        text = resp.json()["choices"][0]["message"]["content"]
    assert len(text) == BIG


@pytest.mark.parametrize("surface", ["grpc", "rest", "door"])
def test_a_unary_answer_over_the_limit_is_refused_alike_on_every_surface(e2e: E2E, surface: str):
    _script(e2e, MAX_ANSWER_BYTES + 4 * PIECE)
    if surface == "grpc":
        with pytest.raises(grpc.RpcError) as caught:
            _grpc_chat(e2e)
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE, caught.value.details()
        assert error_info(caught.value).reason == "ANSWER_TOO_LARGE"
    elif surface == "rest":
        resp = _rest_chat(e2e)
        assert resp.status_code == 400, resp.text[:300]
        reasons = [d.get("reason") for d in resp.json()["details"]]
        assert "ANSWER_TOO_LARGE" in reasons
    else:
        resp = _door_chat(e2e)
        assert resp.status_code == 400, resp.text[:300]
        assert resp.json()["error"]["code"] == "ANSWER_TOO_LARGE"
