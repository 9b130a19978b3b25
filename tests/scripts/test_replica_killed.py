"""`make run REPLICAS=2` with one replica killed (kill -9) in the middle of calls
that came through Envoy: what a gRPC caller is told.

A unary call (the server sends no headers before its answer) must end
UNAVAILABLE - Envoy's local reply, grpc-status 14 - the code gRPC retry policies
and clients key on: nothing of the answer reached the caller, so trying again
(another replica answers) is safe; and the other replica keeps serving.

A stream that has already sent messages cannot be told so: its HTTP/2 headers
went out with its first message, and Envoy can then only reset the stream
(RST_STREAM, which gRPC clients report as INTERNAL); no Envoy setting turns that
into trailers. gateway/README.md says so."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from tests.support.stack import Stack, running_stack

# Long enough (greedy, 400 tokens) to be killed mid-way; unary, so no headers go out before it ends.
LONG = pb.ChatRequest(
    messages=[
        content_pb2.Message(role=content_pb2.ROLE_USER, content="Write a very long story about dragons.")
    ],
    generation_config=generation_pb2.GenerationConfig(max_output_tokens=400, temperature=0),
)
SHORT = pb.ChatRequest(
    messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="Say hi.")],
    generation_config=generation_pb2.GenerationConfig(max_output_tokens=4, temperature=0),
)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(replicas=2) as running:
        yield running


def kill_when_busy(stack: Stack, started: threading.Event) -> int:
    """kill -9 of the replica whose process is busy with the call (the other is idle)."""
    started.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for role in ("replica-0", "replica-1"):
            for pid in stack.pids()[role]:
                if _cpu_ticks(pid, 0.2) > 5:
                    os.kill(pid, signal.SIGKILL)
                    return pid
    raise AssertionError("no replica got busy with the call")


def _cpu_ticks(pid: int, over: float) -> int:
    def ticks() -> int:
        fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])

    try:
        before = ticks()
        time.sleep(over)
        return ticks() - before
    except OSError:
        return 0


def test_a_unary_call_is_unavailable_when_its_replica_is_killed(stack: Stack):
    with grpc.insecure_channel(f"127.0.0.1:{stack.http_port}") as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        started = threading.Event()
        killed: list[int] = []
        killer = threading.Thread(target=lambda: killed.append(kill_when_busy(stack, started)))
        killer.start()
        with pytest.raises(grpc.RpcError) as caught:
            started.set()
            stub.Chat(LONG, timeout=120)
        killer.join()
        assert killed, "nothing was killed"
        error = caught.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{error.code()}: {error.details()}"
        # The other replica answers meanwhile.
        reply = stub.Chat(SHORT, timeout=60)
        assert reply.message.parts[0].text
