"""Run the whole service in the foreground: the gRPC server and Envoy.

`make run` calls this. It starts the server, waits until its health check
says SERVING, renders the Envoy config for it and starts Envoy, waits for
Envoy's /ready, and prints where everything is. Ctrl-C (SIGINT) or SIGTERM
stops both - Envoy first, so no new HTTP requests arrive, then the server
with its grace period - and exits 0. If either child dies on its own, the
other is stopped too and the exit code is non-zero. No process is left behind.

    python scripts/run_stack.py [--grpc-port 9000] [--http-port 8000] [--admin-port 9901]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0", help="address both listen on (default 0.0.0.0)")
    parser.add_argument("--grpc-port", type=int, default=9000)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--admin-port", type=int, default=9901, help="Envoy admin, on 127.0.0.1 only")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("AIGC_WORKERS") or os.cpu_count() or 1),
        help="server processes (default AIGC_WORKERS, else the machine's cores)",
    )
    parser.add_argument(
        "--worker-ports",
        default=os.environ.get("AIGC_WORKER_PORTS", ""),
        help="each worker's own port on 127.0.0.1, comma-separated (default: the ports after --grpc-port)",
    )
    args = parser.parse_args(argv)

    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen" / "python")])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("AIGC_GRPC_ADDRESS", f"{args.host}:{args.grpc_port}")
    grpc_port = int(env["AIGC_GRPC_ADDRESS"].rpartition(":")[2])
    workers = max(1, args.workers)
    if workers > 1:
        worker_ports = (
            [int(p) for p in args.worker_ports.split(",")]
            if args.worker_ports
            else [grpc_port + 1 + i for i in range(workers)]
        )
        env["AIGC_WORKER_PORTS"] = ",".join(map(str, worker_ports))
    else:
        worker_ports = []
    env["AIGC_WORKERS"] = str(workers)
    # Envoy balances over the workers' own ports; with one process, its port.
    upstreams = worker_ports or [grpc_port]

    children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(name: str, command: list[str]) -> subprocess.Popen[bytes]:
        # Own process group: the terminal's Ctrl-C reaches only us, and we
        # stop the children in order instead of all at once.
        proc = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        children.append((name, proc))
        return proc

    def failed_child() -> str | None:
        for name, proc in children:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None

    busy = [port for port in (grpc_port, args.http_port, args.admin_port, *worker_ports) if _in_use(port)]
    if busy:
        print(
            f"aigc-service: port(s) {', '.join(map(str, busy))} already in use (another instance?). "
            "Choose others with GRPC_PORT=... HTTP_PORT=... make run",
            file=sys.stderr,
        )
        return 1

    exit_code = 0
    try:
        spawn("server", [sys.executable, "-m", "server"])
        _wait(
            lambda: all(_serving(f"127.0.0.1:{port}") for port in upstreams),
            "the gRPC server" if workers == 1 else f"the {workers} server workers",
            args,
            failed_child,
            lambda: stop_requested,
        )
        # The same script the container runs (docker-compose.yml), so both
        # serve one Envoy config: gateway/envoy.yaml rendered for these ports.
        env["ENVOY_CONFIG"] = str(ROOT / "build" / f"envoy-{args.http_port}.yaml")
        env.setdefault("ENVOY_LOG_LEVEL", "warn")
        # Envoy's worker threads match the server's processes.
        env.setdefault("ENVOY_CONCURRENCY", str(workers))
        spawn(
            "envoy",
            [
                str(ROOT / "gateway" / "run_envoy.sh"),
                "--grpc-upstream=" + ",".join(f"127.0.0.1:{port}" for port in upstreams),
                f"--listen-address={args.host}",
                f"--listen-port={args.http_port}",
                f"--admin-port={args.admin_port}",
            ],
        )
        _wait(lambda: _envoy_ready(args.admin_port), "Envoy", args, failed_child, lambda: stop_requested)
        if not stop_requested:
            print(_banner(args, grpc_port, workers), flush=True)
        while not stop_requested:
            problem = failed_child()
            if problem:
                print(f"aigc-service: {problem}; stopping", file=sys.stderr, flush=True)
                exit_code = 1
                break
            time.sleep(0.2)
    except _StartupFailed as exc:
        print(f"aigc-service: {exc}", file=sys.stderr, flush=True)
        exit_code = 1
    finally:
        # Envoy first (stop taking HTTP traffic), then the server, which
        # drains in-flight RPCs for AIGC_SHUTDOWN_GRACE_SECONDS.
        for name, proc in reversed(children):
            _stop(name, proc)
    return exit_code


class _StartupFailed(Exception):
    pass


def _wait(check, what: str, args: argparse.Namespace, failed_child, stopping) -> None:
    deadline = time.monotonic() + args.startup_timeout
    while not stopping():
        problem = failed_child()
        if problem:
            raise _StartupFailed(f"{what} did not start: {problem}")
        if check():
            return
        if time.monotonic() > deadline:
            raise _StartupFailed(f"{what} not ready after {args.startup_timeout:.0f}s")
        time.sleep(0.1)


def _in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel, contextlib.suppress(grpc.RpcError):
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    return False


def _envoy_ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(name: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"aigc-service: {name} ignored SIGTERM for {timeout:.0f}s; killing it", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _metrics_url() -> str:
    address = os.environ.get("AIGC_METRICS_ADDRESS", "0.0.0.0:9464").strip()
    if address.lower() == "off":
        return "off (AIGC_METRICS_ADDRESS=off)"
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "localhost"
    return f"http://{host}:{port}/metrics (Prometheus)"


def _banner(args: argparse.Namespace, grpc_port: int, workers: int) -> str:
    http = f"http://localhost:{args.http_port}"
    return "\n".join(
        [
            "",
            "aigc-service is up (Ctrl-C stops it):",
            f"  gRPC          localhost:{grpc_port}   (grpcurl -plaintext localhost:{grpc_port} list)",
            f"  workers       {workers} server process{'es' if workers > 1 else ''} (AIGC_WORKERS)",
            f"  HTTP/JSON     {http}/v1/models",
            f"  Swagger UI    {http}/docs",
            f"  OpenAPI spec  {http}/openapi.json",
            "  logs          this terminal: JSON lines, the server's access log (logger aigc.access)",
            "                and Envoy's (one per HTTP request), joined by request_id",
            f"  metrics       {_metrics_url()}",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
