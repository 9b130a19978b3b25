"""`docker compose up` of the shipped file, default profile: what a user checks first.

Host ports come from the file's variables (free ports); nothing else is set.
Callers send the key the server generated in /data/caller-key when there is
one (the safe-by-default rule: from the host, through the published port, a
caller is not on the container's loopback); a server without that rule
serves them keyless.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.container.compose import Compose, running_stack
from tests.container.engine import Engine, say
from tests.support.grpcurl import grpcurl, json_stream

PROMPT = {
    "messages": [{"role": "ROLE_USER", "content": "Say hello."}],
    "generation_config": {"max_output_tokens": 8},
}


@pytest.fixture(scope="module")
def stack(engine: Engine, image: str) -> Iterator[Compose]:
    with running_stack(Compose(engine)) as compose:
        yield compose


@pytest.fixture(scope="module")
def key(stack: Compose) -> str:
    key = stack.caller_key()
    say("callers send the key from /data/caller-key" if key else "no /data/caller-key: callers send no key")
    return key


def headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def grpc_args(key: str) -> list[str]:
    return ["-H", f"authorization: Bearer {key}"] if key else []


def test_up_wait_becomes_healthy_and_publishes_on_loopback_only(stack):
    ps = [json.loads(line) for line in stack("ps", "--format", "json").stdout.splitlines()]
    states = {c["Service"]: c["Health"] for c in ps}
    say(f"up --wait took {stack.took:.1f} s: {states}")
    assert states == {"server": "healthy", "envoy": "healthy", "redis": "healthy"}
    # Only gRPC and HTTP are published, on loopback; /metrics, the workers'
    # ports and the OpenAI door stay inside the compose network.
    for service, port in (("server", 9000), ("envoy", 8000)):
        published = stack.engine.docker("port", stack.container(service)).stdout.split("\n")
        say(f"{service} publishes {published[0]}")
        assert [line for line in published if line] == [
            f"{port}/tcp -> 127.0.0.1:{stack.ports[service_port(service)]}"
        ]


def service_port(service: str) -> str:
    return {"server": "grpc", "envoy": "http"}[service]


def test_grpcurl_lists_and_describes_through_reflection(stack, key):
    target = f"127.0.0.1:{stack.ports['grpc']}"
    listed = grpcurl(*grpc_args(key), target, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"aigc.v1.AigcService", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = grpcurl(*grpc_args(key), target, "describe", "aigc.v1.AigcService")
    assert described.returncode == 0 and "rpc StreamChat" in described.stdout
    say(f"grpcurl {target} list: {' '.join(listed.stdout.split())}")


def test_grpcurl_stream_chat(stack, key):
    target = f"127.0.0.1:{stack.ports['grpc']}"
    result = grpcurl(*grpc_args(key), target, "aigc.v1.AigcService/StreamChat", data=PROMPT)
    assert result.returncode == 0, result.stderr
    messages = json_stream(result.stdout)
    say(f"StreamChat: {len(messages)} messages, last {messages[-1]}")
    assert messages[-1].get("finishReason") or messages[-1].get("finish_reason")


def test_chat_through_envoy(stack, key):
    reply = httpx.post(
        f"http://127.0.0.1:{stack.ports['http']}/v1/chat:generate",
        json=PROMPT,
        headers=headers(key),
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    say(f"POST /v1/chat:generate: {reply.json()}")
    assert reply.json()["model"]


def test_server_sent_events_through_envoy(stack, key):
    url = f"http://127.0.0.1:{stack.ports['http']}/v1/chat:streamGenerate"
    with httpx.stream("POST", url, json=PROMPT, headers=headers(key), timeout=60) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in reply.iter_lines() if line.startswith("data:")]
    say(f"POST /v1/chat:streamGenerate: {len(events)} events")
    assert len(events) >= 2


def test_the_openai_door_through_envoy(stack, key):
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{stack.ports['http']}/openai/v1", api_key=key or "none", max_retries=0
    )
    completion = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    say(f"openai SDK chat.completions: {completion.choices[0].message.content!r}")
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_docs_through_envoy(stack):
    reply = httpx.get(f"http://127.0.0.1:{stack.ports['http']}/docs", timeout=30)
    assert reply.status_code == 200 and "swagger" in reply.text.lower()


def test_no_worker_restarted_and_pid_1_is_tini(stack):
    """With `python -m server` as PID 1 each worker killed itself ~1 s after start (issue 14 (2))."""
    logs = stack("logs", "--no-color", "server").stdout
    started, restarted = logs.count("worker started"), logs.count("worker exited; restarting it")
    pid1 = stack.exec("server", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline").stdout
    say(f"server: PID 1 is {pid1.strip()!r}; workers started {started}, restarted {restarted}")
    assert pid1.startswith("/usr/bin/tini -- python -m server")
    assert (started, restarted) == (2, 0)


def test_down_exits_0(stack):
    result = stack.down()
    stack.downed = True
    say(f"docker compose down: exit {result.returncode}")
    assert result.returncode == 0, result.stderr
