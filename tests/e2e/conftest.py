"""One real stack (server + Envoy, scripts/run_stack.py) in front of fake vendors.

The fakes (tests/fakes: OpenAI, Gemini, Anthropic wire formats) run in an
event loop on a background thread, so tests stay synchronous: a plain gRPC
stub and httpx client talk to the real processes, while the fakes answer the
server's upstream calls. One stack serves the whole tests/e2e package; each
test starts with empty fakes (`reset_fakes`, autouse).

The config file points the `openai`, `gemini` and `anthropic` presets (and
`qwen`, through QWEN_BASE_URL) at the fakes, with `max_retries = 0` so a
scripted 5xx or 429 is answered once, and adds three upstreams of our own:
`slow` (the OpenAI fake with a 1 s `timeout_seconds`), `stall` (the same
fake with a 1 s `idle_timeout_seconds`), `retrying` (the same fake with
`max_retries = 2`), `dead` (a closed port) and nothing else. Model
`claude-then-gpt` falls back from the Anthropic fake to gpt-4o-mini. Every
other preset is listed but has no key. The built-in embedding model is on
(started on its first use), the built-in chat model off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from aigc.v1 import aigc_service_pb2_grpc
from tests.fakes.http import Connection, FakeServer, Reply, closed_port
from tests.proxies.env import isolated_env, write_config
from tests.proxies.relays import LoopThread
from tests.support.stack import Stack, running_stack

# Dummy keys that look real: tests assert none of them ever shows in a reply or a log.
KEYS = {
    "OPENAI_API_KEY": "sk-e2e-openai-5f4e3d2c1b0a",
    "GEMINI_API_KEY": "AIzaE2eGeminiKey0123456789",
    "ANTHROPIC_API_KEY": "sk-ant-e2e-anthropic-a1b2c3",
    "DASHSCOPE_API_KEY": "sk-e2e-dashscope-9z8y7x",
}
# Seconds: every call a test makes is bounded by this.
TIMEOUT = 20


class Fake(FakeServer):
    """tests/fakes' scripted server, driven from the test thread."""

    def __init__(self, loop: LoopThread) -> None:
        super().__init__()
        self._loop = loop

    def script(self, *replies: Reply) -> None:
        self._loop.loop.call_soon_threadsafe(self._replies.extend, replies)

    def reset(self) -> None:
        async def clear() -> None:
            self._replies.clear()
            self.requests.clear()
            self.client_gone.clear()

        self._loop.run(clear())

    def wait_client_gone(self, timeout: float = 5) -> bool:
        """True once a Hang/held stream saw its client (our server) close the connection."""

        async def wait() -> bool:
            try:
                async with asyncio.timeout(timeout):
                    await self.client_gone.wait()
            except TimeoutError:
                return False
            return True

        return self._loop.run(wait(), timeout=timeout + 5)


def is_stream_request(request: Any) -> bool:
    if ":streamGenerateContent" in request.path:  # Gemini
        return True
    try:
        return request.json().get("stream") is True  # OpenAI, Anthropic
    except ValueError:
        return False


@dataclasses.dataclass
class Either(Reply):
    """Answers a vendor's streaming endpoint with `stream`, its unary one with `unary`.

    The service serves unary RPCs by folding the vendor's stream (or, before
    that change, from the unary endpoint); the tests hold either way.
    """

    unary: Reply
    stream: Reply

    async def send(self, conn: Connection, server: FakeServer) -> bool:
        chosen = self.stream if is_stream_request(server.requests[-1]) else self.unary
        return await chosen.send(conn, server)


@dataclasses.dataclass
class Fakes:
    openai: Fake
    gemini: Fake
    anthropic: Fake

    def all(self) -> tuple[Fake, ...]:
        return (self.openai, self.gemini, self.anthropic)


@dataclasses.dataclass
class E2E:
    stack: Stack
    fakes: Fakes
    stub: aigc_service_pb2_grpc.AigcServiceStub
    http: httpx.Client
    dead_port: int

    def log(self) -> str:
        return self.stack.output()


def config_text(fakes: Fakes, dead_port: int) -> str:
    return f"""
        default_model = "gpt-4o-mini"

        [upstreams.openai]
        base_url = "{fakes.openai.base_url}/v1"
        max_retries = 0
        timeout_seconds = {TIMEOUT}

        [upstreams.gemini]
        base_url = "{fakes.gemini.base_url}"
        max_retries = 0
        timeout_seconds = {TIMEOUT}

        [upstreams.anthropic]
        base_url = "{fakes.anthropic.base_url}"
        max_retries = 0
        timeout_seconds = {TIMEOUT}

        [upstreams.qwen]
        max_retries = 0
        timeout_seconds = {TIMEOUT}

        [upstreams.slow]
        kind = "openai"
        base_url = "{fakes.openai.base_url}/v1"
        api_key_env = "OPENAI_API_KEY"
        max_retries = 0
        timeout_seconds = 1

        [upstreams.dead]
        kind = "openai"
        base_url = "http://127.0.0.1:{dead_port}/v1"
        requires_key = false
        max_retries = 0
        timeout_seconds = 5

        [upstreams.stall]
        kind = "openai"
        base_url = "{fakes.openai.base_url}/v1"
        api_key_env = "OPENAI_API_KEY"
        max_retries = 0
        idle_timeout_seconds = 1

        [upstreams.retrying]
        kind = "openai"
        base_url = "{fakes.openai.base_url}/v1"
        api_key_env = "OPENAI_API_KEY"
        max_retries = 2

        [[models]]
        id = "retry-model"
        upstream = "retrying"
        upstream_model = "gpt-4o-mini"

        [[models]]
        id = "claude-then-gpt"
        upstream = "anthropic"
        upstream_model = "claude-haiku-4-5"
        fallbacks = ["gpt-4o-mini"]

        [[models]]
        id = "stall-model"
        upstream = "stall"
        upstream_model = "gpt-4o-mini"

        [[models]]
        id = "slow-model"
        upstream = "slow"
        upstream_model = "gpt-4o-mini"

        [[models]]
        id = "dead-model"
        upstream = "dead"
        upstream_model = "gpt-4o-mini"
        """


@pytest.fixture(scope="package")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    with LoopThread() as loop:
        fakes = Fakes(Fake(loop), Fake(loop), Fake(loop))
        for fake in fakes.all():
            loop.run(fake.__aenter__())
        try:
            dead_port = closed_port()
            config = write_config(tmp_path_factory.mktemp("e2e"), config_text(fakes, dead_port))
            env = isolated_env(
                AIGC_CONFIG=config,
                QWEN_BASE_URL=f"{fakes.openai.base_url}/v1",
                # The built-in embedding model (test_builtin_embeddings_e2e.py), not the chat one.
                AIGC_LOCAL_EMBEDDING_ENABLED="true",
                **KEYS,
            )
            with (
                running_stack(env) as stack,
                grpc.insecure_channel(stack.grpc_address) as channel,
                httpx.Client(base_url=stack.http, timeout=TIMEOUT) as http,
            ):
                yield E2E(stack, fakes, aigc_service_pb2_grpc.AigcServiceStub(channel), http, dead_port)
        finally:
            for fake in fakes.all():
                loop.run(fake.__aexit__(None, None, None))


@pytest.fixture(autouse=True)
def reset_fakes(e2e: E2E) -> None:
    for fake in e2e.fakes.all():
        fake.reset()


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The parsed JSON of every `data:` event; any other non-empty line fails."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
        else:
            assert line == "", f"unexpected SSE line {line!r}"
    return events
