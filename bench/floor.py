"""The floor: what grpc.aio itself costs per call, with nothing of ours in it.

    make bench-floor        # or: PYTHONPATH=.:gen/python .venv/bin/python bench/floor.py

A servicer of the same aigc.v1.AigcService that does no work - `Chat` returns a fixed
answer, `StreamChat` yields 21 fixed messages (20 chunks and the last one), and
`StreamComplete` 2 (what the gateway sends when 20 chunks arrive at once: one merged
message and the last) - on uvloop with the server's own options, pinned to core 0,
under the same h2load load as `make bench` (pinned to core 1). h2load sees only HTTP
statuses, so every method here is one the servicer implements (an UNIMPLEMENTED would
count as served). Its requests/s and CPU per request are the ceiling of any Python
grpc.aio service on this machine: the distance between them and the gateway's rows in
RESULTS.md is what our code costs, and the distance between them and the reference
proxy is what Python grpc.aio costs.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import time

from aigc.v1 import aigc_service_pb2
from bench import bodies, load, procfs
from tests.support.processes import free_port, python_env

SERVER = """
import asyncio, sys, uvloop, grpc
from aigc.v1 import aigc_service_pb2 as pb, aigc_service_pb2_grpc as rpc, content_pb2
from server.app import _SERVER_OPTIONS

ANSWER = pb.ChatResponse(id="r", model="m", provider="p")
ANSWER.message.role = content_pb2.ROLE_ASSISTANT
ANSWER.message.parts.add(text="x" * 8)
LAST = pb.ChatResponse(id="r", model="m", provider="p", finish_reason=1)
LAST.usage.prompt_tokens, LAST.usage.completion_tokens, LAST.usage.total_tokens = 10, 20, 30

class Empty(rpc.AigcServiceServicer):
    async def Chat(self, request, context):
        return ANSWER
    async def StreamChat(self, request, context):
        for _ in range(20):
            yield ANSWER
        yield LAST
    async def StreamComplete(self, request, context):
        # Two messages: what the gateway sends when the upstream's 20 chunks
        # arrive together (merged into one message, then the last one).
        yield pb.CompleteResponse(id="r", model="m", provider="p", text="x" * 160)
        yield pb.CompleteResponse(id="r", model="m", provider="p", finish_reason=1)

async def main():
    server = grpc.aio.server(options=[*_SERVER_OPTIONS, ("grpc.so_reuseport", 0)])
    rpc.add_AigcServiceServicer_to_server(Empty(), server)
    server.add_insecure_port(sys.argv[1])
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()

uvloop.run(main())
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    args = parser.parse_args(argv)
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="aigc-floor-") as tmp:
        script = pathlib.Path(tmp) / "empty_server.py"
        script.write_text(SERVER)
        folder = pathlib.Path(tmp)
        chat = bodies.write(folder, "chat.grpc", bodies.grpc_frame("m"))
        complete = aigc_service_pb2.CompleteRequest(prompt="hi").SerializeToString()
        completion = bodies.write(folder, "complete.grpc", struct.pack(">BI", 0, len(complete)) + complete)
        frames = {"Chat": chat, "StreamChat": chat, "StreamComplete": completion}
        proc = subprocess.Popen(
            ["taskset", "-c", args.server_cpus, sys.executable, str(script), address],
            env=python_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "serving"
            os.sched_setaffinity(0, procfs.cpu_list(args.load_cpus))
            where = f"core {args.server_cpus}, h2load on {args.load_cpus}, c{args.concurrency}"
            print(f"empty grpc.aio servicer on {where}")
            for method in ("Chat", "StreamChat", "StreamComplete"):
                frame = frames[method]
                load.h2load(address, method, frame, args.concurrency, 1)  # warm-up
                before = procfs.cpu_seconds([proc.pid])
                result = load.h2load(address, method, frame, args.concurrency, args.seconds)
                cpu = procfs.cpu_seconds([proc.pid]) - before
                per_request = cpu / result.requests * 1e6 if result.requests else float("nan")
                print(
                    f"{method:<14} {result.rate:8,.0f} req/s  p50 {result.p50_ms:.1f} ms  "
                    f"server CPU {per_request:,.0f} us/req  errors {result.errors}"
                )
                time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
