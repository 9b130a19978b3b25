"""Logs, request ids and metrics of real RPCs against the real server process.

Each test makes real calls with its own request id, reads the server's JSON
access line for that id from the process output, and scrapes /metrics before
and after to check what moved, and by exactly how much.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from tests.support.content import text_of
from tests.support.processes import ROOT, ServerProcess, free_port, python_env, running_server
from tests.support.status import error_info

# Every field of an access line, whatever the outcome.
ACCESS_FIELDS = {
    "time",
    "level",
    "logger",
    "message",
    "request_id",
    "method",
    "model",
    "provider",
    "code",
    "latency_ms",
    "ttft_ms",
    "upstream_ms",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "response_id",
    "cancelled",
    "peer",
}
GEN_AI = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "local", "gen_ai_request_model": "smollm2"}
FINISH = {generation_pb2.FINISH_REASON_STOP: "stop", generation_pb2.FINISH_REASON_MAX_TOKENS: "max_tokens"}
# A prompt no log line may contain unless AIGC_LOG_PROMPTS=true.
SECRET_PROMPT = "Say hello to the purple walrus"


class Observed:
    """A running server plus its metrics URL."""

    def __init__(self, server: ServerProcess, metrics_port: int) -> None:
        self.server = server
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.channel = grpc.insecure_channel(server.address)
        self.stub = aigc_service_pb2_grpc.AigcServiceStub(self.channel)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.server.output().splitlines() if line.startswith("{")]

    def access_line(self, request_id: str, timeout: float = 10) -> dict:
        """The one access line of `request_id`, waiting for it (a cancel is logged after the fact)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                line
                for line in self.lines()
                if line.get("logger") == "aigc.access" and line.get("request_id") == request_id
            ]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(found) == 1, f"expected one access line for {request_id}, got {found}"
        return found[0]

    def scrape(self) -> Metrics:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return Metrics(response.read().decode())


class Metrics:
    """Samples of one scrape, looked up by name and a subset of labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """Sum over samples named `name` whose labels include `labels` (0 if none)."""
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def buckets(self, name: str, **labels: str) -> dict[float, float]:
        out: dict[float, float] = {}
        for sample_name, sample_labels, value in self.samples:
            if sample_name == f"{name}_bucket" and all(sample_labels.get(k) == v for k, v in labels.items()):
                le = float(sample_labels["le"])
                out[le] = out.get(le, 0) + value
        return out


def delta(before: Metrics, after: Metrics, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def assert_histogram_got(before: Metrics, after: Metrics, name: str, value: float, **labels: str) -> None:
    """Exactly one observation of `value`: count +1, sum +value, buckets from `value` up +1."""
    assert delta(before, after, f"{name}_count", **labels) == 1
    assert delta(before, after, f"{name}_sum", **labels) == pytest.approx(value)
    old, new = before.buckets(name, **labels), after.buckets(name, **labels)
    for le, count in new.items():
        assert count - old.get(le, 0) == (1 if value <= le else 0), (name, le)


def rid(label: str) -> str:
    return f"obs-{label}-{uuid.uuid4().hex[:8]}"


def user(text: str) -> content_pb2.Message:
    return content_pb2.Message(role=content_pb2.ROLE_USER, content=text)


def chat(max_output_tokens: int = 6, text: str = SECRET_PROMPT, **fields) -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[user(text)],
        generation_config=generation_pb2.GenerationConfig(max_output_tokens=max_output_tokens, temperature=0),
        **fields,
    )


@pytest.fixture(scope="module")
def observed() -> Iterator[Observed]:
    metrics_port = free_port()
    with running_server({"AIGC_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}) as server:
        observed = Observed(server, metrics_port)
        yield observed
        observed.channel.close()


def assert_access_line(line: dict, **expected) -> None:
    assert ACCESS_FIELDS <= line.keys(), ACCESS_FIELDS - line.keys()
    assert line["logger"] == "aigc.access"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["message"] == f"{line['method']} {line['code']} {line['latency_ms']:.1f}ms"
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    for key, value in expected.items():
        assert line[key] == value, (key, line)
    assert "prompt" not in line and "answer" not in line


# --- logs --------------------------------------------------------------------


def test_every_line_the_server_writes_is_json(observed):
    observed.stub.ListModels(pb.ListModelsRequest(), timeout=10)
    output = observed.server.output().splitlines()
    assert output
    for raw in output:
        line = json.loads(raw)  # fails on any line that is not JSON
        assert {"time", "level", "logger", "message"} <= line.keys()
    startup = next(line for line in observed.lines() if line["message"] == "serving aigc.v1.AigcService")
    assert startup["metrics_port"] == int(observed.metrics_url.split(":")[2].split("/")[0])
    assert startup["tracing"] is False


def test_unary_chat_access_line_and_metrics(observed):
    request_id = rid("unary")
    before = observed.scrape()
    response, call = observed.stub.Chat.with_call(
        chat(), metadata=(("x-request-id", request_id),), timeout=30
    )
    after = observed.scrape()

    assert ("x-request-id", request_id) in call.initial_metadata()
    line = observed.access_line(request_id)
    assert_access_line(
        line,
        level="INFO",
        method="Chat",
        model="smollm2",
        provider="local",
        code="OK",
        cancelled=False,
        prompt_tokens=response.usage.prompt_tokens,
        completion_tokens=response.usage.completion_tokens,
        finish_reason=FINISH[response.finish_reason],
        response_id=response.id,
    )
    assert 0 < response.usage.completion_tokens <= 6
    assert 0 < line["upstream_ms"] <= line["latency_ms"]
    # Unary: the first token arrives with the whole answer.
    assert 0 < line["ttft_ms"] <= line["latency_ms"]
    assert "error_reason" not in line

    rpc = {"method": "Chat", "model": "smollm2", "provider": "local"}
    assert delta(before, after, "aigc_requests_total", **rpc, code="OK") == 1
    assert delta(before, after, "aigc_requests_total") == 1  # nothing else moved
    assert delta(before, after, "aigc_request_duration_seconds_count", **rpc) == 1
    assert delta(before, after, "aigc_request_duration_seconds_sum", **rpc) == pytest.approx(
        line["latency_ms"] / 1000, abs=0.001
    )
    overhead = delta(before, after, "aigc_overhead_seconds_sum", **rpc)
    assert delta(before, after, "aigc_overhead_seconds_count", **rpc) == 1
    assert overhead == pytest.approx((line["latency_ms"] - line["upstream_ms"]) / 1000, abs=0.001)
    assert 0 <= overhead < 0.1
    assert_histogram_got(
        before,
        after,
        "gen_ai_client_token_usage",
        response.usage.prompt_tokens,
        **GEN_AI,
        gen_ai_token_type="input",
    )
    assert_histogram_got(
        before,
        after,
        "gen_ai_client_token_usage",
        response.usage.completion_tokens,
        **GEN_AI,
        gen_ai_token_type="output",
    )
    assert delta(before, after, "gen_ai_server_time_to_first_token_seconds_count", **GEN_AI) == 1
    assert delta(before, after, "gen_ai_server_time_to_first_token_seconds_sum", **GEN_AI) == pytest.approx(
        line["ttft_ms"] / 1000, abs=0.001
    )
    assert SECRET_PROMPT not in observed.server.output()


def test_stream_access_line_and_metrics(observed):
    request_id = rid("stream")
    before = observed.scrape()
    responses = list(
        observed.stub.StreamChat(
            chat(max_output_tokens=12), metadata=(("x-request-id", request_id),), timeout=30
        )
    )
    after = observed.scrape()

    usage = responses[-1].usage
    assert 1 < usage.completion_tokens <= 12
    line = observed.access_line(request_id)
    assert_access_line(
        line,
        level="INFO",
        method="StreamChat",
        model="smollm2",
        provider="local",
        code="OK",
        cancelled=False,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        finish_reason=FINISH[responses[-1].finish_reason],
        response_id=responses[0].id,
    )
    # The first token comes well before the end of a 12-token stream.
    assert 0 < line["ttft_ms"] < line["latency_ms"]
    assert 0 < line["upstream_ms"] <= line["latency_ms"]

    rpc = {"method": "StreamChat", "model": "smollm2", "provider": "local"}
    assert delta(before, after, "aigc_requests_total", **rpc, code="OK") == 1
    assert delta(before, after, "aigc_requests_total") == 1
    assert delta(before, after, "aigc_overhead_seconds_count", **rpc) == 1
    assert_histogram_got(
        before, after, "gen_ai_client_token_usage", usage.prompt_tokens, **GEN_AI, gen_ai_token_type="input"
    )
    assert_histogram_got(
        before,
        after,
        "gen_ai_client_token_usage",
        usage.completion_tokens,
        **GEN_AI,
        gen_ai_token_type="output",
    )
    assert delta(before, after, "gen_ai_server_time_to_first_token_seconds_count", **GEN_AI) == 1
    assert delta(before, after, "gen_ai_server_time_to_first_token_seconds_sum", **GEN_AI) == pytest.approx(
        line["ttft_ms"] / 1000, abs=0.001
    )
    assert after.value("aigc_streams_in_flight", **rpc) == 0


def test_cancelled_stream_is_logged_and_counted(observed):
    request_id = rid("cancel")
    rpc = {"method": "StreamChat", "model": "smollm2", "provider": "local"}
    before = observed.scrape()
    stream = observed.stub.StreamChat(
        chat(max_output_tokens=400, text="Tell me a very long story."),
        metadata=(("x-request-id", request_id),),
        timeout=60,
    )
    first = next(stream)
    assert text_of(first.message)
    during = observed.scrape()
    assert during.value("aigc_streams_in_flight", **rpc) == 1
    stream.cancel()

    line = observed.access_line(request_id)
    after = observed.scrape()
    assert_access_line(
        line,
        level="INFO",
        method="StreamChat",
        model="smollm2",
        provider="local",
        code="CANCELLED",
        cancelled=True,
        # The provider never reported usage: unknown, not zero.
        prompt_tokens=None,
        completion_tokens=None,
        finish_reason=None,
        response_id=first.id,
    )
    assert line["ttft_ms"] is not None and line["ttft_ms"] <= line["latency_ms"]
    assert delta(before, after, "aigc_requests_total", **rpc, code="CANCELLED") == 1
    assert delta(before, after, "aigc_requests_total") == 1
    assert after.value("aigc_streams_in_flight", **rpc) == 0
    assert delta(before, after, "gen_ai_client_token_usage_count") == 0


def test_unknown_model_request_id_in_log_error_info_and_metadata(observed):
    request_id = rid("notfound")
    before = observed.scrape()
    with pytest.raises(grpc.RpcError) as caught:
        observed.stub.Chat(chat(model="no-such-model"), metadata=(("x-request-id", request_id),), timeout=10)
    after = observed.scrape()
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # Nothing was answered, so the id rides in the trailers (a trailers-only
    # response, which Envoy turns into HTTP headers), and in ErrorInfo.
    assert ("x-request-id", request_id) in error.trailing_metadata()
    assert error_info(error).metadata["request_id"] == request_id

    line = observed.access_line(request_id)
    assert_access_line(
        line,
        level="WARNING",
        method="Chat",
        model="no-such-model",
        provider="",
        code="NOT_FOUND",
        cancelled=False,
        ttft_ms=None,
        upstream_ms=None,
        prompt_tokens=None,
        completion_tokens=None,
        error_reason="MODEL_NOT_FOUND",
    )
    assert line["error_message"] == error.details()
    # A name we do not serve never becomes a label value.
    assert "no-such-model" not in after.text
    assert delta(before, after, "aigc_requests_total", method="Chat", model="unknown", code="NOT_FOUND") == 1
    assert delta(before, after, "aigc_overhead_seconds_count") == 0
    assert delta(before, after, "aigc_upstream_errors_total") == 0


def test_invalid_request_is_counted_under_its_model(observed):
    request_id = rid("invalid")
    before = observed.scrape()
    with pytest.raises(grpc.RpcError) as caught:
        observed.stub.Chat(
            pb.ChatRequest(model="smollm2"), metadata=(("x-request-id", request_id),), timeout=10
        )
    after = observed.scrape()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    line = observed.access_line(request_id)
    assert_access_line(line, code="INVALID_ARGUMENT", model="smollm2", error_reason="INVALID_REQUEST")
    assert delta(before, after, "aigc_requests_total", model="smollm2", code="INVALID_ARGUMENT") == 1


@pytest.mark.parametrize("method", ["Chat", "StreamChat"])
def test_upstream_error_is_logged_and_counted_by_reason(observed, method):
    # llama.cpp answers 400 to an empty list of DRY breakers.
    request_id = rid("upstream")
    request = chat(max_output_tokens=4)
    request.vendor_params.update({"dry_sequence_breakers": []})
    before = observed.scrape()
    with pytest.raises(grpc.RpcError) as caught:
        call = getattr(observed.stub, method)(request, metadata=(("x-request-id", request_id),), timeout=30)
        if method == "StreamChat":
            list(call)
    after = observed.scrape()
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert info.reason == "UPSTREAM_INVALID_REQUEST"
    assert info.metadata["request_id"] == request_id
    assert ("x-request-id", request_id) in error.trailing_metadata()

    line = observed.access_line(request_id)
    assert_access_line(
        line,
        level="WARNING",
        method=method,
        model="smollm2",
        provider="local",
        code="INVALID_ARGUMENT",
        cancelled=False,
        ttft_ms=None,
        prompt_tokens=None,
        error_reason="UPSTREAM_INVALID_REQUEST",
    )
    assert "HTTP 400" in line["error_message"]
    assert line["upstream_ms"] > 0
    labels = {"provider": "local", "model": "smollm2", "reason": "UPSTREAM_INVALID_REQUEST"}
    assert delta(before, after, "aigc_upstream_errors_total", **labels) == 1
    assert delta(before, after, "aigc_upstream_errors_total") == 1
    rpc = {"method": method, "model": "smollm2", "provider": "local"}
    assert delta(before, after, "aigc_requests_total", **rpc, code="INVALID_ARGUMENT") == 1
    assert delta(before, after, "aigc_overhead_seconds_count", **rpc) == 1
    assert after.value("aigc_streams_in_flight") == 0


def test_generated_request_id_is_returned_and_logged(observed):
    response, call = observed.stub.Complete.with_call(
        pb.CompleteRequest(
            prompt="Once upon a time", generation_config=generation_pb2.GenerationConfig(max_output_tokens=3)
        ),
        timeout=30,
    )
    request_id = dict(call.initial_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    line = observed.access_line(request_id)
    assert_access_line(line, method="Complete", code="OK", completion_tokens=response.usage.completion_tokens)


def test_unsafe_request_id_is_replaced(observed):
    # Spaces (and anything else unsafe in a header or a log) are not echoed.
    _, call = observed.stub.Chat.with_call(
        chat(max_output_tokens=1), metadata=(("x-request-id", "a b"),), timeout=30
    )
    request_id = dict(call.initial_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert observed.access_line(request_id)["code"] == "OK"


def test_list_models_is_logged_without_model(observed):
    request_id = rid("list")
    before = observed.scrape()
    observed.stub.ListModels(pb.ListModelsRequest(), metadata=(("x-request-id", request_id),), timeout=10)
    after = observed.scrape()
    assert_access_line(
        observed.access_line(request_id), method="ListModels", model="", provider="", code="OK"
    )
    assert delta(before, after, "aigc_requests_total", method="ListModels", code="OK") == 1


def test_metrics_endpoint_has_process_metrics_and_no_created_series(observed):
    text = observed.scrape().text
    assert "process_resident_memory_bytes" in text
    assert "python_info" in text
    assert "_created" not in text


# --- settings ----------------------------------------------------------------


def test_prompts_are_logged_only_when_asked():
    metrics_port = free_port()
    env = {"AIGC_LOG_PROMPTS": "true", "AIGC_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
    with running_server(env) as server:
        observed = Observed(server, metrics_port)
        request_id = rid("prompts")
        responses = list(
            observed.stub.StreamChat(
                chat(max_output_tokens=5), metadata=(("x-request-id", request_id),), timeout=30
            )
        )
        line = observed.access_line(request_id)
        observed.channel.close()
    assert line["prompt"] == [{"role": "ROLE_USER", "content": SECRET_PROMPT}]
    assert line["answer"] == "".join(text_of(r.message) for r in responses)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AIGC_LOG_FORMAT": "xml"}, "AIGC_LOG_FORMAT='xml': expected json or console"),
        ({"AIGC_METRICS_ADDRESS": "9464"}, "AIGC_METRICS_ADDRESS='9464': expected host:port"),
        ({"AIGC_LOG_PROMPTS": "maybe"}, "AIGC_LOG_PROMPTS='maybe': expected true or false"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "only grpc is installed",
        ),
    ],
)
def test_bad_observability_setting_stops_the_server(env, message):
    result = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=python_env(env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_console_format_is_for_people():
    metrics_port = free_port()
    env = {"AIGC_LOG_FORMAT": "console", "AIGC_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
    with running_server(env) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
            stub.ListModels(pb.ListModelsRequest(), metadata=(("x-request-id", "console-1"),), timeout=10)
        deadline = time.monotonic() + 10
        while "console-1" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        output = server.output()
    line = next(line for line in output.splitlines() if "request_id=console-1" in line)
    assert re.match(
        r"\d{4}-\d\d-\d\dT[\d:.]+Z INFO    aigc.access: ListModels OK [\d.]+ms  request_id=console-1 ", line
    )
    assert not any(line.startswith("{") for line in output.splitlines())


def test_tracing_off_imports_no_opentelemetry():
    code = (
        "import sys, server.__main__, server.app, server.api.grpc_servicer, server.core.engine\n"
        "from server.observability import tracing_for\n"
        "assert not tracing_for('').enabled\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_stream_past_its_deadline_is_logged_as_deadline_exceeded(observed):
    # Several times: the access line once read the context of the cancelled
    # RPC, which crashed the server about once in a handful of these.
    for _ in range(6):
        request_id = rid("deadline")
        stream = observed.stub.StreamChat(
            chat(max_output_tokens=1000, text="Write a long essay."),
            metadata=(("x-request-id", request_id),),
            timeout=0.4,
        )
        with pytest.raises(grpc.RpcError) as caught:
            list(stream)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        line = observed.access_line(request_id)
        assert_access_line(line, method="StreamChat", code="DEADLINE_EXCEEDED", completion_tokens=None)
    time.sleep(0.5)
    assert observed.server.alive()
