"""The built-in embedding model under the supervisor (AIGC_WORKERS=2): loaded once, by
the supervisor, and used by every worker; and a model that cannot start does not take
the service down - Embed says what is wrong, chat goes on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigc.v1 import aigc_service_pb2_grpc, embedding_pb2
from tests.proxies.env import isolated_env
from tests.support.processes import ServerProcess, free_port
from tests.support.status import error_info


def serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


@contextmanager
def supervised(**env: str) -> Iterator[tuple[ServerProcess, list[int]]]:
    ports = [free_port(), free_port()]
    server = ServerProcess(
        isolated_env(
            AIGC_WORKERS="2",
            AIGC_WORKER_PORTS=",".join(map(str, ports)),
            # No chat model to load: only the embedding model is under test.
            AIGC_LOCAL_ENABLED="false",
            AIGC_LOCAL_EMBEDDING_ENABLED="true",
            AIGC_PRESETS="openai",
            OPENAI_API_KEY="sk-unused-supervisor-test",
            **env,
        )
    )
    try:
        deadline = time.monotonic() + 90
        while not all(serving(f"127.0.0.1:{p}") for p in ports):
            assert server.alive(), server.output()
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        yield server, ports
    finally:
        server.stop()


def embed(port: int, text: str) -> embedding_pb2.EmbedResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        return stub.Embed(embedding_pb2.EmbedRequest(inputs=[text]), timeout=60)


def messages(server: ServerProcess) -> list[str]:
    return [
        json.loads(line).get("message", "") for line in server.output().splitlines() if line.startswith("{")
    ]


def test_every_worker_embeds_with_the_one_model_the_supervisor_started():
    with supervised() as (server, ports):
        first, second = (embed(port, "the same text") for port in ports)
        assert first.embeddings[0].values == second.embeddings[0].values
        assert len(first.embeddings[0].values) == 384
        assert messages(server).count("embedding model loaded") == 1, "loaded once, not per worker"


def test_a_model_that_cannot_start_leaves_the_service_up_and_embed_says_why(tmp_path):
    with supervised(AIGC_LOCAL_EMBEDDING_MODEL_PATH=str(tmp_path / "missing.gguf")) as (server, ports):
        assert "the built-in embedding model did not start" in messages(server)
        with pytest.raises(grpc.RpcError) as caught:
            embed(ports[0], "text")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(caught.value).reason == "UPSTREAM_UNREACHABLE"
        assert "missing.gguf" in caught.value.details()
