"""The load generators, each wrapped to give the same kind of result.

- `wrk` (Debian) for HTTP/1.1: the fake upstream directly, Envoy as a plain
  proxy, and the gateway's HTTP/JSON and SSE routes through Envoy.
- `h2load` (Debian nghttp2-client) for gRPC: POST /aigc.v1.AigcService/<Method>
  with a framed protobuf body straight to the server.
- `bench/streams.mjs` (Node) for what neither reports: time to first byte of
  each stream, and bursts of streams held open.

All are closed loops of C concurrent requests for a fixed time. Latency
percentiles are of whole requests (to the last byte of a stream).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import resource
import subprocess
import tempfile
from collections.abc import Callable

BENCH = pathlib.Path(__file__).resolve().parent
# One gRPC channel per 100 streams: how a gRPC client multiplexes (and Node's
# default stream limit per connection); HTTP/1.1 needs a connection per request.
STREAMS_PER_H2_CONNECTION = 100


@dataclasses.dataclass
class Load:
    """What a load tool saw over one closed-loop run."""

    requests: int  # completed successfully
    errors: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    tool_cpu_s: float  # the load generator's own CPU time
    ttfb_ms: dict[str, float | None] | None = None  # streams client only
    messages: int | None = None  # streams client only
    detail: str = ""  # first error kinds, for the report

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run a tool to the end: (stdout, its CPU seconds); an error with its output if it fails."""
    before = _children_cpu()
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])}... exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout, _children_cpu() - before


def wrk(
    url: str, body: pathlib.Path, concurrency: int, seconds: int, headers: dict[str, str] | None = None
) -> Load:
    args = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s"]
    args += ["-s", str(BENCH / "wrk" / "post.lua"), url]
    env = {**os.environ, "BENCH_BODY_FILE": str(body), "BENCH_HEADERS": _header_lines(headers)}
    out, cpu = _run(args, seconds + 60, env)
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    got = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(
        got[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    kinds = ", ".join(f"{k} {got[k]}" for k in ("status_errors", "read_errors", "timeouts") if got[k])
    return Load(
        requests=got["requests"] - got["status_errors"],
        errors=errors,
        seconds=got["duration_us"] / 1e6,
        p50_ms=got["p50_us"] / 1000,
        p99_ms=got["p99_us"] / 1000,
        tool_cpu_s=cpu,
        detail=kinds,
    )


def h2load(address: str, method: str, frame: pathlib.Path, concurrency: int, seconds: int) -> Load:
    """gRPC through h2load. h2load checks only the HTTP status; gRPC failures
    (grpc-status in trailers) are counted from the server's metrics instead."""
    connections = math.ceil(concurrency / STREAMS_PER_H2_CONNECTION)
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as log:
        args = ["h2load", "-t1", f"-c{connections}", f"-m{math.ceil(concurrency / connections)}"]
        args += [f"-D{seconds}", f"--log-file={log.name}", "-d", str(frame)]
        args += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        out, cpu = _run([*args, f"http://{address}/aigc.v1.AigcService/{method}"], seconds + 60)
        # --log-file: start time (us), HTTP status, duration (us), one request a line.
        durations = []
        for line in pathlib.Path(log.name).read_text().splitlines():
            _start, status, micros = line.split("\t")
            if status == "200":
                durations.append(int(micros) / 1000)
    counts = next(line for line in out.splitlines() if line.startswith("requests:"))
    # "requests: 665 total, 675 started, 665 done, 665 succeeded, 0 failed, 0 errored, 0 timeout"
    numbers = {
        word: int(n) for n, word in (part.split()[:2] for part in counts[len("requests:") :].split(","))
    }
    finished = next(line for line in out.splitlines() if line.startswith("finished in"))
    elapsed = float(finished.split()[2].rstrip(",").removesuffix("s"))
    return Load(
        requests=numbers["succeeded"],
        errors=numbers["failed"] + numbers["errored"] + numbers["timeout"],
        seconds=elapsed,
        p50_ms=_percentile(durations, 50),
        p99_ms=_percentile(durations, 99),
        tool_cpu_s=cpu,
    )


def _header_lines(headers: dict[str, str] | None) -> str:
    return "".join(f"{name}: {value}\n" for name, value in (headers or {}).items())


def _stream_args(
    kind: str, url: str, body: pathlib.Path, concurrency: int, headers: dict[str, str] | None
) -> list[str]:
    args = ["node", str(BENCH / "streams.mjs"), f"--kind={kind}", f"--url={url}", f"--body={body}"]
    return [*args, f"--concurrency={concurrency}", f"--headers={json.dumps(headers or {})}"]


def _stream_load(result: dict, cpu: float) -> Load:
    return Load(
        requests=result["completed"],
        errors=sum(result["errors"].values()),
        seconds=result["wall_s"],
        p50_ms=result["total_ms"]["p50"],
        p99_ms=result["total_ms"]["p99"],
        tool_cpu_s=cpu,
        ttfb_ms=result["ttfb_ms"],
        messages=result["messages"],
        detail=", ".join(f"{k}: {v}" for k, v in result["errors"].items()),
    )


def streams(
    kind: str,
    url: str,
    body: pathlib.Path,
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
) -> Load:
    """Closed loop of `concurrency` streams for `seconds`, with time to first byte."""
    args = [*_stream_args(kind, url, body, concurrency, headers), f"--duration={seconds}"]
    out, cpu = _run(args, seconds + 120)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return _stream_load(json.loads(line.removeprefix("RESULT ")), cpu)


@dataclasses.dataclass
class Burst:
    load: Load
    all_open: bool
    open_after_s: float | None  # when the last of them had its first byte
    at_peak: dict  # what `on_all_open` returned, sampled while all were open


def burst(
    kind: str,
    url: str,
    body: pathlib.Path,
    count: int,
    hold: float,
    on_all_open: Callable[[], dict],
    timeout: float = 60,
    headers: dict[str, str] | None = None,
) -> Burst:
    """Open `count` streams at once, hold them `hold` s after the last one's first byte, cancel all."""
    args = [
        *_stream_args(kind, url, body, count, headers),
        "--burst",
        f"--hold={hold}",
        f"--timeout={timeout}",
    ]
    before = _children_cpu()
    at_peak: dict = {}
    opened: float | None = None
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        result: dict = {}
        for line in proc.stdout:
            if line.startswith("ALL_OPEN "):
                opened = float(line.split()[1]) / 1000
                at_peak = on_all_open()
            elif line.startswith("RESULT "):
                result = json.loads(line.removeprefix("RESULT "))
        proc.wait(timeout + hold + 30)
    if not result:
        raise RuntimeError(f"streams.mjs burst of {count} gave no result (exit {proc.returncode})")
    load = _stream_load(result, _children_cpu() - before)
    return Burst(load, bool(result.get("all_open")), opened, at_peak)


def _percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (the same definition streams.mjs uses)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]
