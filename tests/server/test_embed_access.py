"""Embed goes through the same gate and record as chat, on a real server in front of the
OpenAI fake: a key is required, a key limited to other models is refused, its
tokens_per_minute are charged the tokens the vendor reported, and the access log and the
metrics count the call (operation `embeddings`) under the key's name - never the key.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from aigc.v1 import aigc_service_pb2_grpc, embedding_pb2
from server.access.keys import digest_of, new_key
from tests.fakes import openai_fake
from tests.fakes.http import Connection, FakeServer
from tests.proxies.env import isolated_env, write_config
from tests.proxies.relays import LoopThread
from tests.support.processes import ServerProcess, running_server
from tests.support.status import error_info

KEYS = {name: new_key() for name in ("open", "tokens", "narrow")}
VENDOR_KEY = "sk-embed-access-vendor-5a4b3c"
MODEL = "text-embedding-3-small"


class Forever(openai_fake.Embeddings):
    """openai_fake.Embeddings for every request, however many."""

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        server._replies.append(self)
        return await super().send(conn, server)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, FakeServer]]:
    entries = {"open": "", "tokens": "tokens_per_minute = 100", "narrow": 'models = ["gpt-4o-mini"]'}
    keys = "\n".join(
        f'[[keys]]\nname = "{name}"\nsha256 = "{digest_of(KEYS[name]).hex()}"\n{extra}\n'
        for name, extra in entries.items()
    )
    with LoopThread() as loop:
        vendor = FakeServer()
        loop.run(vendor.__aenter__())
        vendor.script(Forever())
        try:
            config = f"""
                default_model = "gpt-4o-mini"

                [upstreams.openai]
                base_url = "{vendor.base_url}/v1"
                max_retries = 0

                {keys}
                """
            path = write_config(tmp_path_factory.mktemp("embed-access"), config)
            env = isolated_env(AIGC_CONFIG=path, OPENAI_API_KEY=VENDOR_KEY, AIGC_PRESETS="openai")
            del env["AIGC_METRICS_ADDRESS"]  # the server's own free port
            with running_server(env) as server:
                yield server, vendor
        finally:
            loop.run(vendor.__aexit__(None, None, None))


@pytest.fixture
def stub(served) -> Iterator[aigc_service_pb2_grpc.AigcServiceStub]:
    with grpc.insecure_channel(served[0].address) as channel:
        yield aigc_service_pb2_grpc.AigcServiceStub(channel)


def embed(stub, key: str | None, *inputs: str) -> embedding_pb2.EmbedResponse:
    metadata = [("authorization", f"Bearer {KEYS[key]}")] if key else []
    return stub.Embed(embedding_pb2.EmbedRequest(model=MODEL, inputs=inputs), metadata=metadata, timeout=10)


def refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), error_info(caught.value).reason


def test_a_key_is_required(stub):
    assert refusal(lambda: embed(stub, None, "a")) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")


def test_a_key_limited_to_other_models_is_refused(stub, served):
    before = len(served[1].requests)
    assert refusal(lambda: embed(stub, "narrow", "a")) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "MODEL_NOT_ALLOWED",
    )
    assert len(served[1].requests) == before, "refused before any vendor call"


def test_tokens_per_minute_are_charged_the_vendor_s_count(stub):
    text = "x" * 60  # the fake counts 60 tokens; 15 are reserved up front
    assert embed(stub, "tokens", text).usage.prompt_tokens == 60
    assert embed(stub, "tokens", text).usage.prompt_tokens == 60
    # 120 of 100 charged: the next call is over the quota.
    assert refusal(lambda: embed(stub, "tokens", text)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
    )


def test_the_access_log_and_metrics_count_the_call_never_the_key(stub, served):
    server, _ = served
    embed(stub, "open", "hello", "world")
    lines = [json.loads(line) for line in server.output().splitlines() if '"logger":"aigc.access"' in line]
    (line,) = [x for x in lines if x["method"] == "Embed" and x.get("key") == "open"]
    assert (line["code"], line["model"], line["provider"], line["prompt_tokens"]) == (
        "OK",
        MODEL,
        "openai",
        10,
    )
    assert line["surface"] == "grpc" and line["upstream_ms"] is not None
    with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert (
        'aigc_requests_total{code="OK",method="Embed",model="text-embedding-3-small",provider="openai",surface="grpc"}'
        in metrics
    )
    assert re.search(
        r'gen_ai_client_token_usage_sum\{gen_ai_operation_name="embeddings",gen_ai_provider_name="openai",'
        rf'gen_ai_request_model="{MODEL}",gen_ai_token_type="input"\}} \d',
        metrics,
    )
    for secret in [*KEYS.values(), VENDOR_KEY]:
        assert secret not in server.output() and secret not in metrics
