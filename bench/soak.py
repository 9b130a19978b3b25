"""A bounded soak: thousands of mixed calls through Envoy to two replicas, random cancels,
one replica killed half-way; then nothing may be left running, open or growing.

    make soak                                  # defaults below, writes bench/SOAK.md
    make soak SOAK_ARGS="--calls 5000 --concurrency 64"

The stack is the one `make run REPLICAS=2` runs (scripts/run_stack.py --replicas 2): two
independent servers behind one Envoy, caller keys on, their quotas in a real redis-server,
in front of the fast fake OpenAI upstream of `make bench` (bench/upstream/fake_openai.mjs).

Calls, picked at random (seeded): gRPC unary and streaming through Envoy's port (h2c),
HTTP JSON and SSE through Envoy, long streams cancelled by the caller after a random number
of messages, and bad requests (unknown model, invalid field, no key). Half-way, replica 1
is killed with SIGKILL (its whole process group, as a crashed machine); run_stack.py starts
it again while replica 0 serves.

Every call must end one of these ways: answered in full; cancelled by us; refused or
failed with a google.rpc.Status (gRPC status details, the HTTP JSON body, or the SSE
stream's last event); or, only for calls that were on the killed replica, cut (gRPC
UNAVAILABLE from Envoy, or an HTTP body that ends short) - counted apart, and never
more than the calls in flight at the kill. Afterwards: zero streams in flight at
both replicas and the upstream, replica 0's and Envoy's open files where they were
after a warm-up (+8, and for replica 0, which took over the killed one's share, one
pooled upstream connection per concurrent caller more), and replica 0's RSS within
64 MiB of where it started. Exit status 1 if
anything else happened.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import random
import signal
import sys
import tempfile
import time
import urllib.request

import grpc
import httpx
from google.rpc import status_pb2

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from bench import procfs
from bench.services import Upstream
from server.access.keys import digest_of, new_key
from tests.support.redis import running_redis
from tests.support.stack import Stack

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = new_key()
FD_SLACK = 8
RSS_BOUND_MIB = 64.0


@dataclasses.dataclass
class Tally:
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    improper: list[str] = dataclasses.field(default_factory=list)
    in_flight_at_kill: int = 0
    in_flight: int = 0

    def add(self, kind: str, outcome: str, detail: str = "") -> None:
        self.outcomes[(kind, outcome)] += 1
        if outcome == "improper":
            self.improper.append(f"{kind}: {detail}"[:300])


def config(upstream: Upstream) -> str:
    long_profile = "fake@chunks=200,first_ms=0,gap_ms=20"
    return f"""
default_model = "soak"

[upstreams.fake]
kind = "openai"
base_url = "{upstream.base}/v1"
requires_key = false
max_retries = 1

[[models]]
id = "soak"
upstream = "fake"
upstream_model = "fake@chunks=20,first_ms=2,gap_ms=2"

[[models]]
id = "soak-long"
upstream = "fake"
upstream_model = "{long_profile}"

[[keys]]
name = "soak"
sha256 = "{digest_of(KEY).hex()}"
requests_per_minute = 1000000
tokens_per_minute = 100000000
max_concurrent_streams = 10000
"""


def chat(model: str = "soak", text: str = "hello", **fields) -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model,
        messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content=text)],
        generation_config=generation_pb2.GenerationConfig(max_output_tokens=64, **fields),
    )


def grpc_outcome(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    """A gRPC error with our google.rpc.Status is `error`; Envoy's UNAVAILABLE for a dead
    upstream (no details) is `cut`; anything else is improper."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            if status.details:
                return "error", ""
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
        return "cut", f"{error.code().name}: {error.details()}"
    return "improper", f"{error.code().name}: {error.details()}"


def status_body(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and "code" in parsed and "message" in parsed


class Soak:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.metadata = (("authorization", f"Bearer {KEY}"),)
        self.headers = {"authorization": f"Bearer {KEY}"}

    async def run(self, kill) -> float:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.stack.http_port}")
        self.stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        limits = httpx.Limits(max_connections=self.args.concurrency * 2)
        self.http = httpx.AsyncClient(base_url=self.stack.http, timeout=30, limits=limits)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(self.args.calls):
            queue.put_nowait(i)
        began = time.monotonic()
        killed = False

        async def worker() -> None:
            nonlocal killed
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if i == self.args.calls // 2 and not killed and self.args.kill:
                    killed = True
                    self.tally.in_flight_at_kill = self.tally.in_flight
                    kill()
                self.tally.in_flight += 1
                try:
                    await self.one()
                finally:
                    self.tally.in_flight -= 1

        await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))
        took = time.monotonic() - began
        await self.http.aclose()
        await channel.close()
        return took

    async def one(self) -> None:
        roll = self.rng.random()
        if roll < 0.2:
            await self.grpc_unary()
        elif roll < 0.4:
            await self.grpc_stream(cancel_after=None)
        elif roll < 0.55:
            await self.http_unary()
        elif roll < 0.7:
            await self.sse()
        elif roll < 0.85:
            await self.grpc_stream(cancel_after=self.rng.randint(1, 30))
        else:
            await self.bad()

    async def grpc_unary(self) -> None:
        try:
            reply = await self.stub.Chat(chat(), metadata=self.metadata, timeout=30)
        except grpc.aio.AioRpcError as error:
            self.tally.add("grpc-unary", *grpc_outcome(error))
            return
        ok = reply.finish_reason not in (0, generation_pb2.FINISH_REASON_ERROR) and reply.usage.total_tokens
        self.tally.add("grpc-unary", "ok" if ok else "improper", str(reply)[:200])

    async def grpc_stream(self, cancel_after: int | None) -> None:
        kind = "grpc-stream" if cancel_after is None else "grpc-stream-cancelled"
        call = self.stub.StreamChat(
            chat("soak" if cancel_after is None else "soak-long"), metadata=self.metadata, timeout=30
        )
        count, last = 0, None
        try:
            async for message in call:
                count, last = count + 1, message
                if cancel_after is not None and count >= cancel_after:
                    call.cancel()
                    self.tally.add(kind, "cancelled")
                    return
        except grpc.aio.AioRpcError as error:
            self.tally.add(kind, *grpc_outcome(error))
            return
        except asyncio.CancelledError:
            self.tally.add(kind, "cancelled")
            return
        if last is not None and last.finish_reason and last.usage.total_tokens:
            self.tally.add(kind, "ok")
        else:
            self.tally.add(kind, "improper", f"ended after {count} messages without finish/usage")

    async def http_unary(self) -> None:
        body = {"model": "soak", "messages": [{"role": "ROLE_USER", "content": "hi"}]}
        try:
            response = await self.http.post("/v1/chat:generate", json=body, headers=self.headers)
        except httpx.HTTPError as error:
            self.tally.add("http-unary", "cut", repr(error))
            return
        if response.status_code == 200 and response.json().get("usage"):
            self.tally.add("http-unary", "ok")
        elif response.status_code >= 400 and status_body(response.content):
            self.tally.add("http-unary", "error")
        else:
            self.tally.add("http-unary", "improper", f"{response.status_code} {response.text[:200]}")

    async def sse(self) -> None:
        body = {"model": "soak", "messages": [{"role": "ROLE_USER", "content": "hi"}]}
        events = []
        try:
            async with self.http.stream(
                "POST", "/v1/chat:streamGenerate", json=body, headers=self.headers
            ) as response:
                if response.status_code != 200:
                    content = await response.aread()
                    ok = status_body(content)
                    self.tally.add(
                        "sse", "error" if ok else "improper", f"{response.status_code} {content[:200]}"
                    )
                    return
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
        except httpx.HTTPError as error:
            self.tally.add("sse", "cut", repr(error))
            return
        last = events[-1] if events else {}
        if last.get("error"):
            self.tally.add("sse", "error")
        elif last.get("finish_reason") and last.get("usage"):
            self.tally.add("sse", "ok")
        else:
            self.tally.add("sse", "improper", f"clean end without finish or error after {len(events)} events")

    async def bad(self) -> None:
        roll = self.rng.random()
        try:
            if roll < 0.4:
                await self.stub.Chat(chat("no-such-model"), metadata=self.metadata, timeout=30)
            elif roll < 0.7:
                await self.stub.Chat(chat(temperature=9.0), metadata=self.metadata, timeout=30)
            else:
                await self.stub.Chat(chat(), timeout=30)  # no key
        except grpc.aio.AioRpcError as error:
            outcome, detail = grpc_outcome(error)
            self.tally.add("bad-request", "refused" if outcome == "error" else outcome, detail)
            return
        self.tally.add("bad-request", "improper", "a bad request was answered")


def open_files(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


def in_flight(stack: Stack, replica: int) -> float:
    url = f"http://127.0.0.1:{stack.metrics_port + replica}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        page = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith("aigc_streams_in_flight")
    )


def wait_serving(stack: Stack, replica: int, timeout: float = 60) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(stack.replica_addresses[replica]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return True
            time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "bench" / "SOAK.md"))
    parser.add_argument("--no-kill", dest="kill", action="store_false", help="keep both replicas alive")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aigc-soak-") as tmp, running_redis() as redis:
        upstream = Upstream("0-1", chunks=20, first_ms=0, gap_ms=0)
        path = pathlib.Path(tmp) / "aigc.toml"
        path.write_text(config(upstream))
        env = {
            "AIGC_CONFIG": str(path),
            "AIGC_PRESETS": "none",
            "AIGC_LOCAL_ENABLED": "false",
            "AIGC_REDIS_URL": redis.url,
            "AIGC_SHUTDOWN_GRACE_SECONDS": "3",
            "AIGC_LOG_LEVEL": "WARNING",
            "ENVOY_LOG_LEVEL": "error",
        }
        stack = Stack(env, replicas=2)
        try:
            stack.wait_up(timeout=120)
            # Warm-up at full concurrency, no kill: pools and caches filled first.
            warm = argparse.Namespace(**{**vars(args), "calls": 200, "kill": False})
            asyncio.run(Soak(stack, warm).run(lambda: None))
            pids = stack.pids()
            before = {
                "fds_replica0": open_files(pids["replica-0"]),
                "fds_envoy": open_files(pids["envoy"]),
                "rss_replica0": procfs.rss_mib(pids["replica-0"]),
            }

            def kill() -> None:
                for pid in pids["replica-1"]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(os.getpgid(pid), signal.SIGKILL)

            soak = Soak(stack, args)
            took = asyncio.run(soak.run(kill))
            restarted = wait_serving(stack, 1)
            time.sleep(1.5)  # the cancels' last frames reach the servers and the upstream
            upstream_open = upstream.stats()["open"]
            after_pids = stack.pids()
            after = {
                "fds_replica0": open_files(after_pids["replica-0"]),
                "fds_envoy": open_files(after_pids["envoy"]),
                "rss_replica0": procfs.rss_mib(after_pids["replica-0"]),
            }
            streams_left = [in_flight(stack, r) for r in (0, 1)]
        finally:
            stack.stop()
            upstream.process.stop()
    return report(args, soak.tally, took, before, after, streams_left, upstream_open, restarted)


def report(args, tally: Tally, took, before, after, streams_left, upstream_open, restarted) -> int:
    cut = sum(n for (kind, outcome), n in tally.outcomes.items() if outcome == "cut")
    improper = sum(n for (kind, outcome), n in tally.outcomes.items() if outcome == "improper")
    total = sum(tally.outcomes.values())
    checks = {
        f"every one of the {args.calls} calls accounted for": total == args.calls,
        "no call ended improperly (no status, a clean end without finish, a bad request answered)": improper
        == 0,
        f"calls cut by the kill ({cut}) <= calls in flight at the kill ({tally.in_flight_at_kill})": (
            cut <= tally.in_flight_at_kill
        ),
        "the killed replica was started again and serves": restarted,
        f"streams in flight afterwards: replica 0 {streams_left[0]:.0f}, replica 1 {streams_left[1]:.0f}": (
            streams_left == [0, 0]
        ),
        f"upstream streams still open afterwards: {upstream_open}": upstream_open == 0,
        # Replica 0 served the killed one's share: its pool of keep-alive
        # connections to the upstream may hold one more per concurrent caller.
        f"replica 0 open files {before['fds_replica0']} -> {after['fds_replica0']} "
        f"(<= +{args.concurrency + FD_SLACK})": (
            after["fds_replica0"] <= before["fds_replica0"] + args.concurrency + FD_SLACK
        ),
        f"Envoy open files {before['fds_envoy']} -> {after['fds_envoy']} (<= +{FD_SLACK})": (
            after["fds_envoy"] <= before["fds_envoy"] + FD_SLACK
        ),
        f"replica 0 RSS {before['rss_replica0']:.0f} -> {after['rss_replica0']:.0f} MiB "
        f"(<= +{RSS_BOUND_MIB:.0f})": after["rss_replica0"] <= before["rss_replica0"] + RSS_BOUND_MIB,
    }
    kinds = sorted({kind for kind, _ in tally.outcomes})
    outcomes = ["ok", "cancelled", "refused", "error", "cut", "improper"]
    lines = [
        "# Soak: mixed calls, random cancels, a replica killed half-way",
        "",
        f"{datetime.date.today().isoformat()}, {platform.node() or 'this machine'}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Command: "
        f'`make soak SOAK_ARGS="--calls {args.calls} --concurrency {args.concurrency} --seed {args.seed}"` '
        f"([soak.py](soak.py) says what it does). {args.calls} calls in {took:.1f} s "
        f"({args.calls / took:.0f}/s) at concurrency {args.concurrency}; replica 1 SIGKILLed after call "
        f"{args.calls // 2}, with {tally.in_flight_at_kill} calls in flight.",
        "",
        "| call | " + " | ".join(outcomes) + " |",
        "|---|" + "---|" * len(outcomes),
    ]
    for kind in kinds:
        lines.append(
            f"| {kind} | " + " | ".join(str(tally.outcomes.get((kind, o), 0)) for o in outcomes) + " |"
        )
    lines += [
        "",
        "ok: answered in full (finish reason and usage). cancelled: by the caller, mid-stream. "
        "refused: a bad request answered with its google.rpc.Status. error: a failure with a "
        "google.rpc.Status (gRPC details, HTTP JSON body or the SSE stream's last event). cut: a call "
        "on the killed replica, ended by Envoy (gRPC UNAVAILABLE without details, or an HTTP body cut "
        "short) - there is no one left to say more. improper: anything else (must be 0).",
        "",
        "| check | result |",
        "|---|---|",
    ]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in checks.items()]
    if tally.improper:
        lines += ["", "Improper endings (first 20):", ""] + [f"- `{d}`" for d in tally.improper[:20]]
    text = "\n".join(lines) + "\n"
    pathlib.Path(args.out).write_text(text)
    print(text)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
