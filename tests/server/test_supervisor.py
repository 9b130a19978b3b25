"""Several workers under one supervisor: one model, every worker serving, one /metrics,
a dead worker replaced, a clean stop - the real `python -m server` with AIGC_WORKERS=2."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from tests.support.processes import ServerProcess, free_port


def ask(address: str) -> pb.ChatResponse:
    with grpc.insecure_channel(address) as channel:
        request = pb.ChatRequest(
            messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")],
            generation_config=generation_pb2.GenerationConfig(max_output_tokens=2),
        )
        return aigc_service_pb2_grpc.AigcServiceStub(channel).Chat(request, timeout=30)


def serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def lines(server: ServerProcess) -> list[dict]:
    return [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def supervised() -> Iterator[tuple[ServerProcess, list[int], int]]:
    ports, metrics = [free_port(), free_port()], free_port()
    server = ServerProcess(
        {
            "AIGC_WORKERS": "2",
            "AIGC_WORKER_PORTS": ",".join(map(str, ports)),
            "AIGC_METRICS_ADDRESS": f"127.0.0.1:{metrics}",
            "AIGC_PRESETS": "none",
        }
    )
    try:
        deadline = time.monotonic() + 90
        while not all(serving(f"127.0.0.1:{p}") for p in ports):
            assert server.alive(), server.output()
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        yield server, ports, metrics
    finally:
        server.stop()


def test_one_model_serves_every_worker(supervised):
    server, ports, _ = supervised
    loaded = [line for line in lines(server) if line["message"] == "local model loaded"]
    assert len(loaded) == 1, "the model is loaded once, by the supervisor"
    assert "worker" not in loaded[0]
    serving_lines = [line for line in lines(server) if line["message"] == "serving aigc.v1.AigcService"]
    assert sorted(line["worker"] for line in serving_lines) == [0, 1]
    for port in ports:
        assert ask(f"127.0.0.1:{port}").usage.completion_tokens > 0
    # The shared public port reaches a worker too (SO_REUSEPORT).
    assert ask(server.address).usage.completion_tokens > 0
    workers = {line.get("worker") for line in lines(server) if line.get("logger") == "aigc.access"}
    assert workers == {0, 1}


def test_metrics_add_up_over_the_workers(supervised):
    _, ports, metrics = supervised

    def total() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("aigc_requests_total{") and 'method="Chat"' in line
        )

    before = total()
    for port in ports:
        ask(f"127.0.0.1:{port}")
    assert total() == before + 2


def test_a_dead_worker_is_replaced(supervised):
    server, ports, _ = supervised
    started = [line for line in lines(server) if line["message"] == "worker started" and line["worker"] == 1]
    pid = started[-1]["pid"]
    import os

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        restarted = [
            line for line in lines(server) if line["message"] == "worker started" and line["worker"] == 1
        ]
        if len(restarted) > len(started) and serving(f"127.0.0.1:{ports[1]}"):
            break
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.2)
    assert ask(f"127.0.0.1:{ports[1]}").usage.completion_tokens > 0


def test_sigterm_stops_every_worker_and_the_model():
    ports = [free_port(), free_port()]
    server = ServerProcess(
        {"AIGC_WORKERS": "2", "AIGC_WORKER_PORTS": ",".join(map(str, ports)), "AIGC_PRESETS": "none"}
    )
    try:
        deadline = time.monotonic() + 90
        while not all(serving(f"127.0.0.1:{p}") for p in ports):
            assert server.alive() and time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        assert server.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        server.stop()
    stopped = [line for line in lines(server) if line["message"] == "stopped"]
    assert sorted(str(line.get("worker")) for line in stopped) == ["0", "1", "None"]
    assert not any(serving(f"127.0.0.1:{p}") for p in ports)
