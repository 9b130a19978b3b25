"""Hand-written hostile inputs through Envoy and the real server (fast; part of `make test`).

Each is answered with a 4xx and a google.rpc.Status body, whoever refuses it
(Envoy's transcoder and limits, or the server's validation) - on the agent
doors, that API's own error shape with our reason - and the service goes on
serving. A case that reveals a server-side defect is marked
xfail(strict=True) with the reason: the server owner fixes the server and
removes the mark. The generated counterpart is `make fuzz` (run_fuzz.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import httpx
import pytest

from aigc.v1 import aigc_service_pb2 as pb
from tests.fuzz.env import MAX_OUTPUT_TOKENS
from tests.fuzz.status import assert_status
from tests.support.stack import Stack
from tests.support.status import error_info

SERVICE = "aigc.v1.AigcService"
JSON = {"content-type": "application/json"}
MAX_REQUEST_BYTES = 16 * 1024 * 1024
HI = {"role": "ROLE_USER", "content": "hi"}


def _chat(**fields: Any) -> dict[str, Any]:
    return {"messages": [HI], "generation_config": {"max_output_tokens": 4}, **fields}


def _raw(text: str) -> bytes:
    """A chat request with `text` spliced in verbatim: JSON that json.dumps cannot write."""
    return (
        b'{"messages":[{"role":"ROLE_USER","content":"hi"}],' + text.encode("utf-8", "surrogatepass") + b"}"
    )


def _tool(prop: dict[str, Any]) -> dict[str, Any]:
    return {"function": {"name": "f", "parameters": {"type": "object", "properties": {"p": prop}}}}


def _deep(depth: int, open_: bytes, close: bytes, leaf: bytes = b"1") -> bytes:
    return open_ * depth + leaf + close * depth


# name -> (path, body bytes, expected HTTP status)
CASES: dict[str, tuple[str, bytes, int]] = {
    # size
    "100 MB body": (
        "/v1/chat:generate",
        b'{"messages":[{"role":"ROLE_USER","content":"' + b"a" * 100 * 2**20 + b'"}]}',
        413,
    ),
    "100 MB body, stream": ("/v1/chat:streamGenerate", b'{"prompt":"' + b"a" * 100 * 2**20 + b'"}', 413),
    "10,000 messages": ("/v1/chat:generate", json.dumps(_chat(messages=[HI] * 10_000)).encode(), 400),
    "10,000 parts": (
        "/v1/chat:generate",
        json.dumps(_chat(messages=[{"role": "ROLE_USER", "parts": [{"text": "x"}] * 10_000}])).encode(),
        400,
    ),
    # nesting
    "JSON nested 10,000 deep (arrays)": ("/v1/chat:generate", _deep(10_000, b"[", b"]"), 400),
    "JSON nested 10,000 deep in vendor_params": (
        "/v1/chat:generate",
        b'{"messages":[{"role":"ROLE_USER","content":"hi"}],"vendor_params":'
        + _deep(10_000, b'{"a":', b"}")
        + b"}",
        400,
    ),
    "JSON nested 10,000 deep in messages": (
        "/v1/chat:generate",
        b'{"messages":' + _deep(10_000, b"[", b"]", b"{}") + b"}",
        400,
    ),
    "JSON nested 60 deep in vendor_params (past protobuf's recursion limit)": (
        "/v1/chat:generate",
        _raw('"vendor_params":' + '{"a":' * 60 + "1" + "}" * 60),
        400,
    ),
    # encoding
    "invalid UTF-8 in a string": (
        "/v1/chat:generate",
        b'{"messages":[{"role":"ROLE_USER","content":"\xff\xfe"}]}',
        400,
    ),
    "overlong UTF-8 (C0 AF)": (
        "/v1/chat:generate",
        b'{"messages":[{"role":"ROLE_USER","content":"\xc0\xaf"}]}',
        400,
    ),
    "invalid UTF-8 in a key": ("/v1/chat:generate", b'{"messages":[{"role":"ROLE_USER","\xff":"hi"}]}', 400),
    "lone surrogate escape": ("/v1/chat:generate", _raw('"user_id":"\\ud800"'), 400),
    "byte order mark": ("/v1/chat:generate", b"\xef\xbb\xbf" + json.dumps(_chat()).encode(), 400),
    # NUL: one rule for every string field (it was refused in text, prompt and tool results only)
    "NUL in the model name": ("/v1/chat:generate", json.dumps(_chat(model="smol\0lm2")).encode(), 400),
    "NUL in a stop sequence": (
        "/v1/chat:generate",
        json.dumps(_chat(generation_config={"max_output_tokens": 4, "stop_sequences": ["a\0"]})).encode(),
        400,
    ),
    "NUL in user_id": ("/v1/chat:generate", json.dumps(_chat(user_id="u\0")).encode(), 400),
    "NUL in a tool description": (
        "/v1/chat:generate",
        json.dumps(_chat(tools=[{"function": {"name": "f", "description": "d\0"}}])).encode(),
        400,
    ),
    "NUL in vendor_params": (
        "/v1/chat:generate",
        json.dumps(_chat(vendor_params={"k": "v\0"})).encode(),
        400,
    ),
    "NUL in a vendor_params key": (
        "/v1/chat:generate",
        json.dumps(_chat(vendor_params={"k\0": 1})).encode(),
        400,
    ),
    "NUL in the completion's user_id": (
        "/v1/completion:generate",
        json.dumps({"prompt": "x", "user_id": "\0"}).encode(),
        400,
    ),
    # schema patterns: re.compile's OverflowError was a 500; RE2 syntax, counts <= 1000
    "pattern with a count past int64": (
        "/v1/chat:generate",
        json.dumps(_chat(tools=[_tool({"type": "string", "pattern": "^a{99999999999}$"})])).encode(),
        400,
    ),
    "pattern with nested counts": (
        "/v1/chat:generate",
        json.dumps(_chat(tools=[_tool({"type": "string", "pattern": "(a{1000}){1000}"})])).encode(),
        400,
    ),
    "pattern with a backreference": (
        "/v1/chat:generate",
        json.dumps(_chat(tools=[_tool({"type": "string", "pattern": "(a+)\\1"})])).encode(),
        400,
    ),
    "pattern in a response schema": (
        "/v1/chat:generate",
        json.dumps(
            _chat(
                response_format={
                    "type": "TYPE_JSON_SCHEMA",
                    "schema": {"type": "string", "pattern": "^a{4294967294}$"},
                }
            )
        ).encode(),
        400,
    ),
    "patternProperties key": (
        "/v1/chat:generate",
        json.dumps(
            _chat(tools=[{"function": {"name": "f", "parameters": {"patternProperties": {"a{99999}": {}}}}}])
        ).encode(),
        400,
    ),
    # numbers
    "1e400 for a double": ("/v1/chat:generate", _raw('"generation_config":{"temperature":1e400}'), 400),
    "2**70 for an int32": (
        "/v1/chat:generate",
        _raw(f'"generation_config":{{"max_output_tokens":{2**70}}}'),
        400,
    ),
    "-2**70 for an int32": (
        "/v1/chat:generate",
        _raw(f'"generation_config":{{"max_output_tokens":{-(2**70)}}}'),
        400,
    ),
    "2**31 for an int32": (
        "/v1/chat:generate",
        _raw(f'"generation_config":{{"max_output_tokens":{2**31}}}'),
        400,
    ),
    "int32 max tokens (over the model's cap)": (
        "/v1/chat:generate",
        _raw(f'"generation_config":{{"max_output_tokens":{2**31 - 1}}}'),
        400,
    ),
    "negative tokens": ("/v1/chat:generate", _raw('"generation_config":{"max_output_tokens":-5}'), 400),
    "fraction for an int32": (
        "/v1/chat:generate",
        _raw('"generation_config":{"max_output_tokens":4.5}'),
        400,
    ),
    "2**70 for an int64 string": (
        "/v1/chat:generate",
        _raw(f'"generation_config":{{"seed":"{2**70}"}}'),
        400,
    ),
    "1e400 in vendor_params": ("/v1/chat:generate", _raw('"vendor_params":{"x":1e400}'), 400),
    # NaN / Infinity: bare tokens are not JSON; the proto3 JSON strings parse and must be range-checked
    "bare NaN": ("/v1/chat:generate", _raw('"generation_config":{"temperature":NaN}'), 400),
    "bare Infinity": ("/v1/chat:generate", _raw('"generation_config":{"top_p":Infinity}'), 400),
    "bare -Infinity": ("/v1/chat:generate", _raw('"generation_config":{"presence_penalty":-Infinity}'), 400),
    '"NaN" temperature': ("/v1/chat:generate", _raw('"generation_config":{"temperature":"NaN"}'), 400),
    '"Infinity" top_p': ("/v1/chat:generate", _raw('"generation_config":{"top_p":"Infinity"}'), 400),
    '"-Infinity" frequency_penalty': (
        "/v1/chat:generate",
        _raw('"generation_config":{"frequency_penalty":"-Infinity"}'),
        400,
    ),
    "NaN in vendor_params": ("/v1/chat:generate", _raw('"vendor_params":{"x":NaN}'), 400),
    # enums
    "unknown enum name": (
        "/v1/chat:generate",
        json.dumps(_chat(messages=[{"role": "ROLE_NOPE"}])).encode(),
        400,
    ),
    "unknown enum number": (
        "/v1/chat:generate",
        json.dumps(_chat(messages=[{"role": 99, "content": "hi"}])).encode(),
        400,
    ),
    "unknown nested enum": (
        "/v1/chat:generate",
        json.dumps(_chat(response_format={"type": "NOPE"})).encode(),
        400,
    ),
    "unspecified role": (
        "/v1/chat:generate",
        json.dumps(_chat(messages=[{"role": "ROLE_UNSPECIFIED", "content": "hi"}])).encode(),
        400,
    ),
    # types
    "string for a list": ("/v1/chat:generate", json.dumps(_chat(messages="hi")).encode(), 400),
    "number for a string": (
        "/v1/chat:generate",
        json.dumps(_chat(messages=[{"role": "ROLE_USER", "content": 5}])).encode(),
        400,
    ),
    "list for an object": ("/v1/chat:generate", json.dumps(_chat(generation_config=[1])).encode(), 400),
    "list for vendor_params": ("/v1/chat:generate", json.dumps(_chat(vendor_params=[1])).encode(), 400),
    "bool for an int32": ("/v1/chat:generate", _raw('"generation_config":{"max_output_tokens":true}'), 400),
    "string for a double": ("/v1/chat:generate", _raw('"generation_config":{"temperature":"hot"}'), 400),
    "null body": ("/v1/chat:generate", b"null", 400),
    "array body": ("/v1/chat:generate", b"[]", 400),
    "string body": ("/v1/chat:generate", b'"hi"', 400),
    "empty body": ("/v1/chat:generate", b"", 400),
    "empty object": ("/v1/chat:generate", b"{}", 400),
    "trailing garbage": ("/v1/chat:generate", json.dumps(_chat()).encode() + b"xyz", 400),
    "truncated JSON": ("/v1/chat:generate", json.dumps(_chat()).encode()[:-3], 400),
    "empty field name": ("/v1/chat:generate", _raw('"":1'), 400),
    # the other methods
    "stream: 10,000 deep": ("/v1/chat:streamGenerate", _deep(10_000, b"[", b"]"), 400),
    "stream: unknown enum": (
        "/v1/chat:streamGenerate",
        json.dumps(_chat(messages=[{"role": "ROLE_NOPE"}])).encode(),
        400,
    ),
    "stream: 2**70": (
        "/v1/chat:streamGenerate",
        _raw(f'"generation_config":{{"max_output_tokens":{2**70}}}'),
        400,
    ),
    "completion: number for the prompt": ("/v1/completion:generate", b'{"prompt":5}', 400),
    "completion: no prompt": ("/v1/completion:generate", b"{}", 400),
    "completion: invalid UTF-8": ("/v1/completion:generate", b'{"prompt":"\xff"}', 400),
    "completion stream: NaN": (
        "/v1/completion:streamGenerate",
        b'{"prompt":"x","generation_config":{"top_p":NaN}}',
        400,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_body_gets_4xx_status_and_the_service_serves_on(http: httpx.Client, name: str) -> None:
    path, body, expected = CASES[name]
    resp = http.post(path, content=body, headers=JSON)
    assert resp.status_code == expected, resp.text[:500]
    assert resp.headers["content-type"] == "application/json"
    info = assert_status(resp.json(), name)
    assert info["metadata"]["request_id"] == resp.headers["x-request-id"]
    assert http.get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        f"page_size={2**70}",
        "page_size=-1e400",
        "page_size=NaN",
        "page_size=abc",
        "page_token=%FF%FE",
        "nope=1",
    ],
)
def test_hostile_query_gets_400_status(http: httpx.Client, query: str) -> None:
    resp = http.get(f"/v1/models?{query}")
    assert resp.status_code == 400, resp.text[:300]
    assert_status(resp.json(), query)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(_chat(messages=[{"role": "ROLE_USER", "content": "a\0b"}])).encode(),  # escaped \u0000
        b'{"messages":[{"role":"ROLE_USER","content":"a\x00b"}],"generation_config":{"max_output_tokens":4}}',
        json.dumps(_chat(messages=[{"role": "ROLE_USER", "parts": [{"text": "a\0b"}]}])).encode(),
    ],
    ids=["escaped", "raw byte", "in a part"],
)
def test_nul_in_message_text_is_400(http: httpx.Client, body: bytes) -> None:
    """NUL is valid JSON (\\u0000) and valid protobuf, but C-string and database
    code at vendors truncates or refuses it. The transcoder takes a raw NUL byte
    inside a JSON string as leniently as the escaped form: the server refuses both."""
    resp = http.post("/v1/chat:generate", content=body, headers=JSON)
    assert resp.status_code == 400, f"{resp.status_code}: {resp.text[:200]}"
    assert_status(resp.json())


def test_headers_envoy_accepts_reach_the_server(http: httpx.Client) -> None:
    """20 KiB of headers: within Envoy's 60 KiB, and over grpc-core's default 8 KiB
    (16 KiB hard) metadata limit, which answered RESOURCE_EXHAUSTED = HTTP 429."""
    resp = http.post("/v1/chat:generate", json=_chat(), headers={"x-trace-context": "a" * 20 * 1024})
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:200]}"


def test_the_typed_rest_api_says_a_retry_cannot_fix_a_bad_request(http: httpx.Client) -> None:
    """x-should-retry, as on the door, on the server's own errors (a trailers-only
    gRPC answer, whose metadata Envoy turns into headers)."""
    resp = http.post("/v1/chat:generate", json=_chat(user_id="u\0"))
    assert resp.status_code == 400, resp.text[:300]
    assert resp.headers["x-should-retry"] == "false"
    missing = http.post("/v1/chat:generate", json=_chat(model="no-such-model"))
    assert missing.status_code == 404 and missing.headers["x-should-retry"] == "false"


# --- the OpenAI-compatible door, through Envoy ------------------------------------

DOOR = "/openai/v1/chat/completions"
DOOR_HI = [{"role": "user", "content": "hi"}]


def _door(**fields: Any) -> bytes:
    return json.dumps({"model": "smollm2", "messages": DOOR_HI, "max_tokens": 4, **fields}).encode()


def _deep_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


# name -> (method, path, body, expected HTTP status, expected error code)
CHAT_DOOR_CASES: dict[str, tuple[str, str, bytes, int, str]] = {
    "max_tokens below int32": ("POST", DOOR, _door(max_tokens=-2147483649), 400, "INVALID_REQUEST"),
    "max_tokens above int64": ("POST", DOOR, _door(max_tokens=2**70), 400, "INVALID_REQUEST"),
    "max_completion_tokens negative": (
        "POST",
        DOOR,
        _door(max_completion_tokens=-1),
        400,
        "INVALID_REQUEST",
    ),
    "tool parameters nested 400 deep": (
        "POST",
        DOOR,
        _door(tools=[{"type": "function", "function": {"name": "f", "parameters": _deep_schema(400)}}]),
        400,
        "INVALID_REQUEST",
    ),
    # orjson's own depth limit (1024): refused before any translation
    "vendor_params nested 10,000 deep": (
        "POST",
        DOOR,
        b'{"model":"smollm2","messages":[{"role":"user","content":"hi"}],"vendor_params":'
        + _deep(10_000, b'{"a":', b"}")
        + b"}",
        400,
        "MALFORMED_REQUEST",
    ),
    "a pattern past int64": (
        "POST",
        DOOR,
        _door(
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": _tool({"pattern": "^a{99999999999}$"})["function"]["parameters"],
                    },
                }
            ]
        ),
        400,
        "INVALID_REQUEST",
    ),
    "NUL in a stop sequence": ("POST", DOOR, _door(stop=["\0"]), 400, "INVALID_REQUEST"),
    "NUL in safety_identifier": ("POST", DOOR, _door(safety_identifier="\0"), 400, "INVALID_REQUEST"),
    "NaN temperature": (
        "POST",
        DOOR,
        _door().replace(b'"max_tokens"', b'"temperature":NaN,"max_tokens"'),
        400,
        "MALFORMED_REQUEST",
    ),
    "not JSON": ("POST", DOOR, b"{", 400, "MALFORMED_REQUEST"),
    "an unknown path": ("POST", "/openai/v1/no-such-route", b"{}", 404, "UNKNOWN_ROUTE"),
    "an unknown method": ("GET", DOOR, b"", 404, "UNKNOWN_ROUTE"),
    "an unknown path under models": ("DELETE", "/openai/v1/models", b"", 404, "UNKNOWN_ROUTE"),
}


@pytest.mark.parametrize("name", list(CHAT_DOOR_CASES))
def test_hostile_door_request_gets_an_openai_error_with_our_status(http: httpx.Client, name: str) -> None:
    """Each was a text/plain 500 (token overflow, nesting) or a text/plain 404/405 (the
    SDKs read code=None); now OpenAI-shaped JSON with our reason and Status inside."""
    method, path, body, expected, code = CHAT_DOOR_CASES[name]
    resp = http.request(method, path, content=body or None, headers=JSON if body else {})
    assert resp.status_code == expected, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    error = resp.json()["error"]
    assert error["code"] == code, error
    assert_status(error["status"], name)
    assert resp.headers["x-should-retry"] == "false"
    assert http.get("/openai/v1/models").status_code == 200


@pytest.mark.parametrize("name", ["key", "api_key", "access_token"])
def test_a_key_in_the_query_never_reaches_the_access_log(http: httpx.Client, stack: Stack, name: str) -> None:
    """`?key=`, `?api_key=`, `?access_token=` were written verbatim in Envoy's access log."""
    secret = f"sk-query-secret-{name}-0123456789"
    for path in (f"/v1/models?{name}={secret}", f"/openai/v1/models?{name}={secret}"):
        http.get(path, headers={"x-request-id": f"query-{name}-{len(path)}"})
    deadline = time.monotonic() + 20  # Envoy flushes its log every few seconds
    while time.monotonic() < deadline:
        logged = [
            line for line in stack.output().splitlines() if f"query-{name}-" in line and '"protocol"' in line
        ]
        if len(logged) == 2:
            break
        time.sleep(0.2)
    assert len(logged) == 2, logged
    assert secret not in stack.output()
    assert all(json.loads(line)["path"].endswith("/models") for line in logged), logged


def test_headers_envoy_accepts_reach_the_door(http: httpx.Client) -> None:
    """The door's listener refused a header over 8 KiB (aiohttp's default) with a text/plain
    400 quoting it - an `authorization` key, logged at ERROR - though Envoy takes 60 KiB."""
    resp = http.get("/openai/v1/models", headers={"x-trace-context": "a" * 20 * 1024})
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:200]}"


# --- gRPC through Envoy's port (passed through unread) ------------------------------


def _raw_grpc(stack: Stack, method: str, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(f"127.0.0.1:{stack.http_port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, timeout=30)
    return caught.value


@pytest.mark.parametrize(
    "payload",
    [b"\xff" * 64, b"\x0a\x05\x0a\x03", b"\x12\xff\xff\xff\xff\x0f"],
    ids=["garbage", "truncated", "huge length"],
)
def test_grpc_garbage_is_invalid_argument(stack: Stack, payload: bytes) -> None:
    err = _raw_grpc(stack, "Chat", payload)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()


def test_grpc_message_over_the_limit_is_invalid_argument_request_too_large(stack: Stack) -> None:
    """Through Envoy's port, unread: the server refuses it as the HTTP door does
    (413's body), INVALID_ARGUMENT REQUEST_TOO_LARGE - not the RESOURCE_EXHAUSTED
    that clients retry (grpcio's own, only above twice the limit)."""
    # A model name as long as the whole limit: the message is a few bytes over it.
    payload = pb.ChatRequest(model="a" * MAX_REQUEST_BYTES).SerializeToString()
    err = _raw_grpc(stack, "Chat", payload)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    info = error_info(err)
    assert (info.reason, info.metadata["limit_bytes"]) == ("REQUEST_TOO_LARGE", str(MAX_REQUEST_BYTES))


# --- the agent doors: each answers in its own API's error shape, with our reason ---------

MSG = [{"role": "user", "content": "hi"}]


def _anthropic(**fields: Any) -> bytes:
    return json.dumps({"model": "smollm2", "max_tokens": 4, "messages": MSG, **fields}).encode()


def _responses(**fields: Any) -> bytes:
    return json.dumps({"model": "smollm2", "max_output_tokens": 4, "input": "hi", **fields}).encode()


ANTHROPIC = "/anthropic/v1/messages"
RESPONSES = "/openai/v1/responses"
DEEP_SCHEMA = (
    '{"type":"object","properties":' + '{"a":{"type":"object","properties":' * 200 + "{}" + "}}" * 200 + "}"
)
# name -> (path, body bytes, expected HTTP status, expected reason)
AGENT_DOOR_CASES: dict[str, tuple[str, bytes, int, str]] = {
    "anthropic: not an object": (ANTHROPIC, b"[]", 400, "INVALID_REQUEST"),
    "anthropic: truncated JSON": (ANTHROPIC, b'{"model":', 400, "MALFORMED_REQUEST"),
    "anthropic: invalid UTF-8": (ANTHROPIC, b'{"model":"\xff"}', 400, "MALFORMED_REQUEST"),
    "anthropic: NaN temperature": (
        ANTHROPIC,
        _anthropic()[:-1] + b',"temperature":NaN}',
        400,
        "MALFORMED_REQUEST",
    ),
    "anthropic: JSON nested 10,000 deep": (ANTHROPIC, _deep(10_000, b"[", b"]"), 400, "MALFORMED_REQUEST"),
    "anthropic: max_tokens 2**70": (
        ANTHROPIC,
        _anthropic()[:-1] + b',"max_tokens":1180591620717411303424}',
        400,
        "INVALID_REQUEST",
    ),
    "anthropic: max_tokens -1": (ANTHROPIC, _anthropic(max_tokens=-1), 400, "INVALID_REQUEST"),
    "anthropic: no messages": (ANTHROPIC, _anthropic(messages=[]), 400, "INVALID_REQUEST"),
    "anthropic: a system role in messages": (
        ANTHROPIC,
        _anthropic(messages=[{"role": "system", "content": "x"}]),
        400,
        "INVALID_REQUEST",
    ),
    "anthropic: a document block": (
        ANTHROPIC,
        _anthropic(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]),
        400,
        "INVALID_REQUEST",
    ),
    "anthropic: an image that is not base64": (
        ANTHROPIC,
        _anthropic(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "%%"},
                        }
                    ],
                }
            ]
        ),
        400,
        "INVALID_REQUEST",
    ),
    "anthropic: a tool_result answering no call": (
        ANTHROPIC,
        _anthropic(
            messages=[
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "y"}]}
            ]
        ),
        400,
        "INVALID_REQUEST",
    ),
    "anthropic: tool_use input not an object": (
        ANTHROPIC,
        _anthropic(
            messages=[
                *MSG,
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": 3}]},
            ]
        ),
        400,
        "INVALID_REQUEST",
    ),
    "anthropic: input_schema nested 200 deep": (
        ANTHROPIC,
        _anthropic()[:-1] + b',"tools":[{"name":"f","input_schema":' + DEEP_SCHEMA.encode() + b"}]}",
        400,
        "INVALID_REQUEST",
    ),
    "anthropic: thinking budget not a number": (
        ANTHROPIC,
        _anthropic(thinking={"type": "enabled", "budget_tokens": "x"}),
        400,
        "INVALID_REQUEST",
    ),
    "anthropic: top_k": (ANTHROPIC, _anthropic(top_k=5), 400, "INVALID_REQUEST"),
    "anthropic: NUL in text": (
        ANTHROPIC,
        _anthropic(messages=[{"role": "user", "content": "a\0b"}]),
        400,
        "INVALID_REQUEST",
    ),
    "anthropic: unknown model": (ANTHROPIC, _anthropic(model="no-such-model"), 404, "MODEL_NOT_FOUND"),
    "anthropic: unknown model, stream": (
        ANTHROPIC,
        _anthropic(model="no-such-model", stream=True),
        404,
        "MODEL_NOT_FOUND",
    ),
    "anthropic: count_tokens": (f"{ANTHROPIC}/count_tokens", _anthropic(), 404, "NOT_OFFERED"),
    "responses: not an object": (RESPONSES, b"[]", 400, "INVALID_REQUEST"),
    "responses: truncated JSON": (RESPONSES, b'{"input":', 400, "MALFORMED_REQUEST"),
    "responses: NaN top_p": (RESPONSES, _responses()[:-1] + b',"top_p":NaN}', 400, "MALFORMED_REQUEST"),
    "responses: JSON nested 10,000 deep": (
        RESPONSES,
        _deep(10_000, b'{"a":', b"}"),
        400,
        "MALFORMED_REQUEST",
    ),
    "responses: empty input": (RESPONSES, _responses(input=[]), 400, "INVALID_REQUEST"),
    "responses: an item_reference": (
        RESPONSES,
        _responses(input=[{"type": "item_reference", "id": "x"}]),
        400,
        "INVALID_REQUEST",
    ),
    "responses: previous_response_id": (
        RESPONSES,
        _responses(previous_response_id="resp_1"),
        400,
        "INVALID_REQUEST",
    ),
    "responses: a built-in tool": (
        RESPONSES,
        _responses(tools=[{"type": "web_search"}]),
        400,
        "INVALID_REQUEST",
    ),
    "responses: json_schema without a schema": (
        RESPONSES,
        _responses(text={"format": {"type": "json_schema", "name": "x"}}),
        400,
        "INVALID_REQUEST",
    ),
    "responses: reasoning effort max": (
        RESPONSES,
        _responses(reasoning={"effort": "max"}),
        400,
        "INVALID_REQUEST",
    ),
    "responses: function_call_output without call_id": (
        RESPONSES,
        _responses(input=[{"type": "function_call_output", "output": "x"}]),
        400,
        "INVALID_REQUEST",
    ),
    "responses: output for no call": (
        RESPONSES,
        _responses(input=[*MSG, {"type": "function_call_output", "call_id": "c", "output": "x"}]),
        400,
        "INVALID_REQUEST",
    ),
    "responses: max_output_tokens 0": (RESPONSES, _responses(max_output_tokens=0), 400, "INVALID_REQUEST"),
    "responses: parameters nested 200 deep": (
        RESPONSES,
        _responses()[:-1]
        + b',"tools":[{"type":"function","name":"f","parameters":'
        + DEEP_SCHEMA.encode()
        + b"}]}",
        400,
        "INVALID_REQUEST",
    ),
    # The chat door shares the Struct parsing: the same schema was a 500 there too.
    "openai chat: parameters nested 200 deep": (
        "/openai/v1/chat/completions",
        b'{"model":"smollm2","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function",'
        + b'"function":{"name":"f","parameters":'
        + DEEP_SCHEMA.encode()
        + b"}}]}",
        400,
        "INVALID_REQUEST",
    ),
    "responses: unknown model, stream": (
        RESPONSES,
        _responses(model="no-such-model", stream=True),
        404,
        "MODEL_NOT_FOUND",
    ),
}


@pytest.mark.parametrize("name", list(AGENT_DOOR_CASES))
def test_hostile_door_body_gets_its_apis_error_shape_and_the_service_serves_on(
    http: httpx.Client, name: str
) -> None:
    path, body, expected, reason = AGENT_DOOR_CASES[name]
    resp = http.post(path, content=body, headers=JSON)
    assert resp.status_code == expected, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    if path.startswith("/anthropic/"):
        assert resp.json()["type"] == "error" and error["type"].endswith("_error"), resp.text[:300]
        assert error["reason"] == reason and resp.json()["request_id"] == resp.headers["x-request-id"]
    else:
        assert error["type"].endswith("_error") and error["code"] == reason, resp.text[:300]
    assert error["message"]
    assert http.get("/v1/models").status_code == 200


# --- afterwards ----------------------------------------------------------------------


def test_still_answers_and_nothing_above_was_a_5xx(http: httpx.Client, stack: Stack) -> None:
    resp = http.post(
        "/v1/chat:generate", json=_chat(generation_config={"max_output_tokens": MAX_OUTPUT_TOKENS})
    )
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["message"]["parts"][0]["text"]
    statuses = [
        json.loads(line)["status"]
        for line in stack.output().splitlines()
        if line.startswith("{") and '"protocol"' in line and '"logger"' not in line
    ]
    assert statuses and not [s for s in statuses if s and int(s) >= 500]
