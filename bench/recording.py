"""What recording every call costs: server CPU per call with the store on and off, in one run.

    PYTHONPATH=.:gen/python .venv/bin/python bench/recording.py --calls 3000 --rounds 2

The real stack (scripts/run_stack.py, one worker) in front of the fast fake
upstream (bench/upstream/fake_openai.mjs), as `make bench` starts them; the
only difference between the variants is AIGC_RECORD_CALLS (SQLite in a temp
AIGC_DATA_DIR when on). Rounds alternate on/off so drift on a shared machine
hits both alike. A grpc.aio client (on the load cores) sends `--calls` unary
Chat and as many StreamChat calls, `--concurrency` at a time; the figure is
the server process's CPU time (user + system, /proc) per call, which the
store's writer task shares with the calls. With the store on, the run checks
that every call has its row. Writes bench/RECORDING.md.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import tempfile
import time

import grpc

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from bench import procfs, services
from server.store import Store, StoreSettings

REQUEST = pb.ChatRequest(
    model=services.MODEL,
    messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="Hello, how are you?")],
    generation_config=generation_pb2.GenerationConfig(max_output_tokens=64),
)


async def load(address: str, calls: int, concurrency: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        queue = list(range(calls * 2))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                if n % 2:
                    await stub.Chat(REQUEST, timeout=30)
                else:
                    async for _ in stub.StreamChat(REQUEST, timeout=30):
                        pass

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def rows(data_dir: pathlib.Path) -> int:
    store = await Store.open(StoreSettings.from_env({"AIGC_DATA_DIR": str(data_dir)}))
    try:
        return await store.count_calls()
    finally:
        await store.close()


def measure(upstream, args, record: bool) -> float:
    """Server CPU microseconds per call for one variant."""
    with tempfile.TemporaryDirectory(prefix="aigc-recording-") as tmp:
        env = {"AIGC_RECORD_CALLS": "true" if record else "false", "AIGC_DATA_DIR": tmp}
        with services.gateway(upstream, args.gateway_cpus, env, [], 2000) as stack:
            server = stack.pids()["server"]
            asyncio.run(load(stack.grpc_address, args.warmup, args.concurrency))
            before = procfs.cpu_seconds(server)
            asyncio.run(load(stack.grpc_address, args.calls, args.concurrency))
            used = procfs.cpu_seconds(server) - before
        if record:  # the stack has stopped: SIGTERM wrote what was still queued
            written = asyncio.run(rows(pathlib.Path(tmp)))
            assert written == 2 * (args.calls + args.warmup), (
                f"{written} rows for {2 * (args.calls + args.warmup)} calls"
            )
    return used / (2 * args.calls) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--calls", type=int, default=3000, help="unary and as many streamed calls per variant"
    )
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs, alternating")
    parser.add_argument("--gateway-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    parser.add_argument("--output", default=str(services.BENCH / "RECORDING.md"))
    args = parser.parse_args()
    results: dict[str, list[float]] = {"on": [], "off": []}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    upstream = services.Upstream(args.load_cpus, chunks=20, first_ms=0, gap_ms=0)
    with services.stopping(upstream.process):
        for _ in range(args.rounds):
            for variant in ("on", "off"):
                results[variant].append(measure(upstream, args, variant == "on"))
                print(variant, f"{results[variant][-1]:.0f} us/call", flush=True)
    on, off = statistics.median(results["on"]), statistics.median(results["off"])
    lines = [
        "# What recording every call costs (bench/recording.py)",
        "",
        f"{started}; {args.rounds} alternating rounds of {args.calls} unary + {args.calls} streamed "
        f"Chat calls per variant, concurrency {args.concurrency}, server on cores {args.gateway_cpus}, "
        "one worker, the fast fake upstream (20 chunks). Server CPU (user + system) per call, "
        "median of the rounds:",
        "",
        "| store | CPU per call | rounds |",
        "|---|---|---|",
        f"| off (`AIGC_RECORD_CALLS=false`) | {off:.0f} us | {_list(results['off'])} |",
        f"| on (SQLite) | {on:.0f} us | {_list(results['on'])} |",
        "",
        f"Recording adds **{(on - off) / off * 100:+.1f}%** CPU per call "
        "(every call's row was found in the store after the run).",
        "",
    ]
    pathlib.Path(args.output).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


if __name__ == "__main__":
    raise SystemExit(main())
