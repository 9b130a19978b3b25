"""The whole service as a user meets it after `make run`: server + Envoy,
reached with curl-like HTTP, SSE, grpcurl on both ports, and a real browser."""

from __future__ import annotations

import json
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from tests.support.grpcurl import grpcurl, json_stream
from tests.support.processes import ROOT
from tests.support.stack import Stack, running_stack

CHAT = "/v1/chat:generate"
STREAM_CHAT = "/v1/chat:streamGenerate"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack() as running:
        yield running


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http, timeout=60) as client:
        yield client


def chat_body(text: str, max_tokens: int = 8, **extra) -> dict:
    return {
        "messages": [{"role": "ROLE_USER", "content": text}],
        "generation_config": {"max_output_tokens": max_tokens},
        **extra,
    }


def sse_events(response: httpx.Response) -> Iterator[tuple[float, dict]]:
    """(arrival time, parsed JSON) per `data:` event, as the bytes arrive."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield time.monotonic(), json.loads(line[len("data: ") :])
        else:
            assert line == "", f"unexpected SSE line {line!r}"


def assert_status_body(response: httpx.Response, code: int, reason: str) -> dict:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert body["message"]
    infos = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert len(infos) == 1, body
    assert infos[0]["reason"] == reason
    assert infos[0]["domain"] == "aigc-service"
    assert infos[0]["metadata"]["request_id"] == response.headers["x-request-id"]
    return infos[0]


def test_unary_chat_returns_the_unified_shape(http):
    response = http.post(CHAT, json=chat_body("Say hello.", 6))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"id", "model", "provider", "create_time", "message", "finish_reason", "usage"}
    assert body["model"] == "smollm2" and body["provider"] == "local"
    assert body["message"]["role"] == "ROLE_ASSISTANT" and body["message"]["parts"][0]["text"]
    assert body["finish_reason"] in ("FINISH_REASON_STOP", "FINISH_REASON_MAX_TOKENS")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert response.headers["x-request-id"]


def test_stream_chat_is_sse_flushed_as_generated(http):
    body = chat_body("Tell me a story about a cat.", 60, generation_config={"max_output_tokens": 60})
    with http.stream("POST", STREAM_CHAT, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        events = list(sse_events(response))
    assert len(events) >= 5
    (first_at, _), (last_at, last) = events[0], events[-1]
    # Flushed per message: ~60 tokens take a visible while to decode, and the
    # first event must not wait for the last.
    assert last_at - first_at > 0.05
    assert last["finish_reason"] in ("FINISH_REASON_STOP", "FINISH_REASON_MAX_TOKENS")
    assert last["usage"]["completion_tokens"] == len(events) - 1 or last["usage"]["completion_tokens"] > 0
    assert all("finish_reason" not in event for _, event in events[:-1])


def test_json_schema_over_sse_through_envoy(http):
    """The local model's grammar-constrained JSON, streamed as SSE through Envoy, parses and validates."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    body = chat_body(
        "Name a city and its population as JSON.",
        80,
        response_format={"type": "TYPE_JSON_SCHEMA", "schema": schema},
        generation_config={"max_output_tokens": 80, "temperature": 0},
    )
    with http.stream("POST", STREAM_CHAT, json=body) as response:
        assert response.status_code == 200
        events = [event for _, event in sse_events(response)]
    text = "".join(p.get("text", "") for e in events for p in e.get("message", {}).get("parts", []))
    jsonschema.validate(json.loads(text), schema)
    assert events[-1]["finish_reason"] == "FINISH_REASON_STOP"


def test_chinese_round_trips_intact(http):
    # The model's name is echoed back in the error: a deterministic round trip
    # of Chinese text through JSON -> proto -> gRPC -> proto -> JSON.
    name = "模型-文心一言"
    response = http.post(CHAT, json=chat_body("你好", model=name))
    assert response.status_code == 404
    info = assert_status_body(response, 5, "MODEL_NOT_FOUND")
    assert info["metadata"]["model"] == name
    assert name in response.json()["message"]
    # And Chinese prompts stream as valid UTF-8 JSON events.
    with http.stream("POST", STREAM_CHAT, json=chat_body("请用中文写一句问候语。", 12)) as stream:
        events = [event for _, event in sse_events(stream)]
    assert events[-1]["usage"]["prompt_tokens"] > 0


def test_unknown_model_is_404_with_status_body(http):
    response = http.post(CHAT, json=chat_body("hi", model="gpt-unknown"))
    assert response.status_code == 404
    assert_status_body(response, 5, "MODEL_NOT_FOUND")


def test_stream_error_before_first_message_is_a_real_http_error(http):
    response = http.post(STREAM_CHAT, json=chat_body("hi", model="gpt-unknown"))
    assert response.status_code == 404
    assert_status_body(response, 5, "MODEL_NOT_FOUND")


def test_invalid_request_is_400_with_bad_request_details(http):
    response = http.post(CHAT, json={"messages": [], "generation_config": {"temperature": 9}})
    assert response.status_code == 400
    assert_status_body(response, 3, "INVALID_REQUEST")
    bad = [d for d in response.json()["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    fields = {v["field"] for v in bad[0]["field_violations"]}
    assert fields == {"messages", "generation_config.temperature"}


def test_malformed_json_is_400_and_service_keeps_serving(http):
    response = http.post(CHAT, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == 3
    assert http.post(CHAT, json=chat_body("hi", 2)).status_code == 200


def test_unknown_path_404_and_unknown_query_parameter_400(http):
    assert http.get("/v1/nothing-here").status_code == 404
    assert http.get("/v1/models", params={"colour": "blue"}).status_code == 400
    assert http.get("/v1/models", params={"page_size": 1}).status_code == 200


def test_list_models_over_http(http):
    response = http.get("/v1/models")
    assert response.status_code == 200
    models = response.json()["models"]
    assert models[0]["id"] == "smollm2" and models[0]["is_default"] is True


def test_grpc_passes_through_the_http_port_and_works_on_its_own(stack):
    for address in (f"127.0.0.1:{stack.http_port}", stack.grpc_address):
        result = grpcurl(
            address,
            "aigc.v1.AigcService/StreamChat",
            data={
                "messages": [{"role": "ROLE_USER", "content": "你好"}],
                "generation_config": {"max_output_tokens": 8},
            },
        )
        assert result.returncode == 0, result.stderr
        messages = json_stream(result.stdout)
        assert messages[-1]["usage"]["totalTokens"] > 0


def test_openapi_spec_is_served_and_valid(http):
    response = http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    spec = response.json()
    assert spec == json.loads((ROOT / "gen/openapi/openapi.json").read_text())
    validate(spec)
    assert "text/event-stream" in spec["paths"][STREAM_CHAT]["post"]["responses"]["200"]["content"]


def test_swagger_ui_renders_in_a_headless_browser(stack):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: `make browser` installs Debian's package"
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=15000",
                "--dump-dom",
                f"{stack.http}/docs",
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    dom = result.stdout
    assert 'class="swagger-ui' in dom, result.stderr[-2000:]
    # Rendered from the spec: the title and every operation's path.
    assert "aigc-service" in dom
    for path in (CHAT, STREAM_CHAT, "/v1/completion:generate", "/v1/completion:streamGenerate", "/v1/models"):
        assert path in dom
    # The typed content model is in the rendered schemas.
    for schema in (
        "aigc.v1.Part",
        "aigc.v1.ToolCall",
        "aigc.v1.Image",
        "aigc.v1.ResponseFormat",
        "aigc.v1.Capability",
    ):
        assert schema in dom, schema


def test_ctrl_c_stops_everything_cleanly():
    stack = Stack()
    try:
        stack.wait_up()
        children = subprocess.run(
            ["pgrep", "-P", str(stack.proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 2  # server and Envoy
        stack.proc.send_signal(signal.SIGINT)
        assert stack.proc.wait(timeout=30) == 0
        for pid in children:
            assert not pathlib.Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"child {pid} left behind"
    finally:
        stack.stop()


def _is_zombie(pid: str) -> bool:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_ctrl_c_lets_an_http_stream_in_flight_finish_before_envoy_stops():
    """Ctrl-C mid-way through an SSE answer: the server drains it (its grace) while
    Envoy still carries it to the caller; Envoy stops last, so the answer ends whole."""
    # A grace long enough for the rest of the answer on a loaded machine.
    stack = Stack({"AIGC_SHUTDOWN_GRACE_SECONDS": "150"})
    try:
        stack.wait_up()
        body = chat_body("Write a long story about the sea.", max_tokens=120)
        body["generation_config"]["temperature"] = 0
        events: list[dict] = []
        cut = None
        with httpx.stream("POST", f"{stack.http}{STREAM_CHAT}", json=body, timeout=200) as response:
            assert response.status_code == 200
            try:
                for _, event in sse_events(response):
                    events.append(event)
                    if len(events) == 1:
                        stack.proc.send_signal(signal.SIGINT)
            except httpx.HTTPError as exc:
                cut = exc
        assert cut is None, f"the stream was cut after {len(events)} events: {cut!r}"
        assert len(events) > 2
        finish = events[-1].get("finish_reason")
        assert finish in ("FINISH_REASON_STOP", "FINISH_REASON_MAX_TOKENS"), events[-1].get("error")
        assert events[-1]["usage"]["completion_tokens"] > 1
        assert stack.proc.wait(timeout=200) == 0
        output = stack.output()
        # The server stopped before Envoy was told to.
        assert output.index('"message":"stopped"') < output.index("stopping Envoy"), output[-3000:]
    finally:
        stack.stop()
