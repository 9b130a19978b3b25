"""Typed content through the whole stack, on all four transports: gRPC unary and
stream, HTTP/JSON and SSE through Envoy.

Each vendor's fake answers with the conformance suite's wire-exact replies
(tests/conformance/vendors), so every feature - tool calls with streamed
arguments, images, JSON schema, reasoning - is shown end to end once per
transport and per vendor kind, with the request the vendor received checked
too.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
from collections.abc import Callable

import pytest
from google.protobuf import json_format

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import generation_pb2
from server.catalog import load_catalog
from server.pricing import load_prices
from tests.conformance.requests import WEATHER, chat, user
from tests.conformance.vendor import CallSpec, UsageSpec
from tests.e2e.conftest import E2E, TIMEOUT, Fake, sse_events
from tests.support.content import fold_deltas

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
USAGE = UsageSpec(prompt=30, completion=20, reasoning=12)


@dataclasses.dataclass(frozen=True)
class Kind:
    vendor: str  # tests/conformance/vendors/<vendor>.py
    fake: str  # attribute of Fakes
    model: str  # a preset with tools, vision, JSON schema
    thinker: str  # a preset with reasoning


KINDS = [
    Kind("openai", "openai", "gpt-4o-mini", "o4-mini"),
    Kind("gemini", "gemini", "gemini-2.5-flash", "gemini-2.5-flash"),
    Kind("anthropic", "anthropic", "claude-haiku-4-5", "claude-haiku-4-5"),
]


@dataclasses.dataclass
class Got:
    parts: list
    finish: int
    usage: pb.Usage


def grpc_unary(e2e: E2E, request: pb.ChatRequest) -> Got:
    response = e2e.stub.Chat(request, timeout=TIMEOUT)
    return Got(list(response.message.parts), response.finish_reason, response.usage)


def grpc_stream(e2e: E2E, request: pb.ChatRequest) -> Got:
    messages = list(e2e.stub.StreamChat(request, timeout=TIMEOUT))
    return Got(fold_deltas(m.message.parts for m in messages), messages[-1].finish_reason, messages[-1].usage)


def _json(request: pb.ChatRequest) -> dict:
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


def http_unary(e2e: E2E, request: pb.ChatRequest) -> Got:
    reply = e2e.http.post("/v1/chat:generate", json=_json(request))
    assert reply.status_code == 200, reply.text
    response = json_format.ParseDict(reply.json(), pb.ChatResponse())
    return Got(list(response.message.parts), response.finish_reason, response.usage)


def http_sse(e2e: E2E, request: pb.ChatRequest) -> Got:
    with e2e.http.stream("POST", "/v1/chat:streamGenerate", json=_json(request)) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "text/event-stream"
        messages = [json_format.ParseDict(e, pb.ChatResponse()) for e in sse_events(reply)]
    return Got(fold_deltas(m.message.parts for m in messages), messages[-1].finish_reason, messages[-1].usage)


TRANSPORTS: dict[str, Callable[[E2E, pb.ChatRequest], Got]] = {
    "grpc-unary": grpc_unary,
    "grpc-stream": grpc_stream,
    "http-json": http_unary,
    "http-sse": http_sse,
}


def vendor_of(kind: Kind):
    try:
        return importlib.import_module(f"tests.conformance.vendors.{kind.vendor}").VENDOR
    except ModuleNotFoundError:
        pytest.fail(f"no conformance vendor module for {kind.vendor}")


def fake_of(e2e: E2E, kind: Kind) -> Fake:
    return getattr(e2e.fakes, kind.fake)


parametrize = pytest.mark.parametrize(
    ("kind", "transport"),
    [(k, t) for k in KINDS for t in TRANSPORTS],
    ids=[f"{k.vendor}-{t}" for k in KINDS for t in TRANSPORTS],
)


@parametrize
def test_tool_call_with_streamed_arguments(e2e: E2E, kind: Kind, transport: str) -> None:
    vendor = vendor_of(kind)
    arguments = json.dumps({"city": "巴黎 Paris"}, ensure_ascii=False)
    fake_of(e2e, kind).script(vendor.tool_calls_reply([CallSpec("call_e2e", "get_weather", arguments, 5)]))
    got = TRANSPORTS[transport](e2e, chat(user("Weather in Paris?"), model=kind.model, tools=[WEATHER]))
    (part,) = got.parts
    assert part.tool_call.name == "get_weather" and part.tool_call.id
    assert json.loads(part.tool_call.arguments) == {"city": "巴黎 Paris"}
    assert got.finish == generation_pb2.FINISH_REASON_TOOL_CALLS
    (sent,) = fake_of(e2e, kind).requests
    assert [t[0] for t in vendor.decode(sent).tools] == ["get_weather"]


@parametrize
def test_image_reaches_the_vendor(e2e: E2E, kind: Kind, transport: str) -> None:
    vendor = vendor_of(kind)
    fake_of(e2e, kind).script(vendor.text_reply(["A single pixel."]))
    request = chat(
        {
            "role": "ROLE_USER",
            "parts": [
                {"text": "What is this?"},
                {"image": {"mime_type": "image/png", "data": base64.b64encode(PNG).decode()}},
            ],
        },
        model=kind.model,
    )
    got = TRANSPORTS[transport](e2e, request)
    assert [p.text for p in got.parts] == ["A single pixel."]
    (sent,) = fake_of(e2e, kind).requests
    assert vendor.decode(sent).messages == [
        ("user", [("text", "What is this?"), ("image", "image/png", PNG)])
    ]


@parametrize
def test_json_schema_reaches_the_vendor(e2e: E2E, kind: Kind, transport: str) -> None:
    vendor = vendor_of(kind)
    fake_of(e2e, kind).script(vendor.text_reply(['{"city":', ' "Paris"}']))
    request = chat(
        user("A city as JSON"),
        model=kind.model,
        response_format={"type": "TYPE_JSON_SCHEMA", "schema": SCHEMA},
    )
    got = TRANSPORTS[transport](e2e, request)
    assert json.loads("".join(p.text for p in got.parts)) == {"city": "Paris"}
    (sent,) = fake_of(e2e, kind).requests
    assert vendor.decode(sent).response_format == ("json_schema", SCHEMA)


@parametrize
def test_reasoning_comes_apart_from_the_answer(e2e: E2E, kind: Kind, transport: str) -> None:
    vendor = vendor_of(kind)
    usage = vendor.supported_usage(USAGE)
    fake_of(e2e, kind).script(
        vendor.reasoning_reply(["Paris is", " in France."], ["Paris."], signature="sig-e2e", usage=usage)
    )
    request = chat(
        user("Where is Paris?"),
        model=kind.thinker,
        reasoning={"effort": "EFFORT_HIGH", "include_reasoning": True},
        generation_config={"max_output_tokens": 30000},
    )
    got = TRANSPORTS[transport](e2e, request)
    assert [p.WhichOneof("data") for p in got.parts] == ["reasoning", "text"]
    assert got.parts[0].reasoning.text == "Paris is in France."
    assert got.parts[1].text == "Paris."
    # The thinkers are preset models: their answers carry what they cost at the preset price.
    expected = usage.proto()
    price = load_prices({}, load_catalog({}), "").lookup(kind.thinker, "", "")
    assert price is not None
    expected.cost.CopyFrom(price.cost(expected))
    assert got.usage == expected
