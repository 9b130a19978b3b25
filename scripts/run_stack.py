"""Run the whole service in the foreground: the gRPC server and Envoy.

`make run` calls this. It starts the server, waits until its health check
says SERVING, renders the Envoy config for it and starts Envoy, waits for
Envoy's /ready, and prints where everything is. Ctrl-C (SIGINT) or SIGTERM
stops both - the server first, which drains the calls in flight for its grace
period while Envoy still carries their answers, then Envoy - and exits 0. If either child dies on its own, the
other is stopped too and the exit code is non-zero. No process is left behind.

With --replicas N (REPLICAS=N make run), N independent servers run behind
the one Envoy, as on N machines, sharing quotas through a local redis-server
(when keys have quotas and AIGC_REDIS_URL is not set); a replica that dies is
started again while the others serve.

    python scripts/run_stack.py [--grpc-port 9000] [--http-port 8000] [--admin-port 9901] [--replicas 1]
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
    parser.add_argument(
        "--openai-port",
        type=int,
        default=0,
        help="the OpenAI-compatible door's port on 127.0.0.1 (default: the gRPC port + 100; replica r: + r)",
    )
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument(
        "--replicas",
        type=int,
        default=int(os.environ.get("AIGC_REPLICAS") or 1),
        help="independent servers behind Envoy, as on several machines (default 1; REPLICAS=2 make run)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("AIGC_WORKERS") or 0),
        help="server processes per replica (default AIGC_WORKERS, else the cores divided by the replicas)",
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
    # One data folder for every replica, so they share the generated caller key
    # (server/access/caller_key.py): .aigc in the working directory, gitignored.
    env["AIGC_DATA_DIR"] = str(pathlib.Path(env.get("AIGC_DATA_DIR") or ".aigc").absolute())
    grpc_port = int(env.get("AIGC_GRPC_ADDRESS", f":{args.grpc_port}").rpartition(":")[2])
    replicas = max(1, args.replicas)
    workers = args.workers or max(1, (os.cpu_count() or 1) // replicas)
    # The server's own settings parser, so the banner says what the server will do.
    sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]
    from server.config import ConfigError, Settings

    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"aigc-service: bad configuration: {exc}", file=sys.stderr)
        return 2
    # Replica r listens on its own public port, its workers on the ports after it.
    plans: list[tuple[int, list[int]]] = []
    for r in range(replicas):
        public = grpc_port + r * (workers + 1)
        if workers > 1:
            if r == 0 and args.worker_ports:
                own = [int(p) for p in args.worker_ports.split(",")]
            else:
                own = [public + 1 + i for i in range(workers)]
        else:
            own = []
        plans.append((public, own))
    # Envoy balances over every worker's own port (or each replica's port).
    upstreams = [port for public, own in plans for port in (own or [public])]
    # The OpenAI-compatible door of each replica (every worker shares it), behind Envoy's /openai/v1.
    openai_base = args.openai_port or grpc_port + 100
    openai_ports = [openai_base + r for r in range(replicas)]
    access = settings.access
    needs_redis = (
        replicas > 1
        and not access.redis_url
        and access.keys.enabled
        and any(not k.limits.unlimited for k in access.keys.keys)
    )
    children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        name: str, command: list[str], child_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        # Own process group: the terminal's Ctrl-C reaches only us, and we
        # stop the children in order instead of all at once.
        proc = subprocess.Popen(command, cwd=ROOT, env=child_env or env, start_new_session=True)
        children.append((name, proc))
        return proc

    def failed_child() -> str | None:
        for name, proc in children:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None

    # name -> (command, env) of each replica, to start it again if it dies.
    replica_commands: dict[str, tuple[list[str], dict[str, str]]] = {}
    restarts: list[float] = []

    def restart_dead_replica() -> bool:
        """With replicas, one that dies is started again, as an orchestrator
        would (compose's `restart: unless-stopped`); Envoy's health checks
        keep calls on the others meanwhile. False when it keeps dying."""
        for i, (name, proc) in enumerate(children):
            if name in replica_commands and proc.poll() is not None:
                now = time.monotonic()
                restarts[:] = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 5:
                    return False
                print(
                    f"aigc-service: {name} exited with code {proc.returncode}; starting it again "
                    "(the other replicas serve meanwhile)",
                    file=sys.stderr,
                    flush=True,
                )
                command, child_env = replica_commands[name]
                children[i] = (
                    name,
                    subprocess.Popen(command, cwd=ROOT, env=child_env, start_new_session=True),
                )
        return True

    used = [p for public, own in plans for p in (public, *own)] + openai_ports
    busy = [port for port in (*used, args.http_port, args.admin_port) if _in_use(port)]
    if busy:
        print(
            f"aigc-service: port(s) {', '.join(map(str, busy))} already in use (another instance?). "
            "Choose others with GRPC_PORT=... HTTP_PORT=... make run",
            file=sys.stderr,
        )
        return 1

    exit_code = 0
    try:
        if needs_redis:
            # Quotas shared by the replicas need one store: a local redis-server.
            env["AIGC_REDIS_URL"] = spawn_redis(spawn)
        for r, (public, own) in enumerate(plans):
            replica_env = {
                **env,
                "AIGC_GRPC_ADDRESS": f"{args.host}:{public}",
                "AIGC_WORKERS": str(workers),
                "AIGC_WORKER_PORTS": ",".join(map(str, own)),
                "AIGC_OPENAI_ADDRESS": f"127.0.0.1:{openai_ports[r]}",
            }
            if replicas > 1:
                # Behind Envoy with others: on SIGTERM, keep answering until
                # Envoy's health checks have moved new calls elsewhere.
                replica_env.setdefault("AIGC_DRAIN_SECONDS", "2.5")
                # Each replica's metrics on their own port: 9464, 9465, ...
                metrics = _metrics_address(r)
                if metrics:
                    replica_env["AIGC_METRICS_ADDRESS"] = metrics
            name = "server" if replicas == 1 else f"replica-{r}"
            spawn(name, [sys.executable, "-m", "server"], replica_env)
            if replicas > 1:
                replica_commands[name] = ([sys.executable, "-m", "server"], replica_env)
        _wait(
            lambda: all(_serving(f"127.0.0.1:{port}") for port in upstreams),
            "the gRPC server" if len(upstreams) == 1 else f"the {len(upstreams)} server processes",
            args,
            failed_child,
            lambda: stop_requested,
        )
        # The same script the container runs (docker-compose.yml), so both
        # serve one Envoy config: gateway/envoy.yaml rendered for these ports.
        env["ENVOY_CONFIG"] = str(ROOT / "build" / f"envoy-{args.http_port}.yaml")
        env.setdefault("ENVOY_LOG_LEVEL", "warn")
        # Envoy's worker threads match the server's processes (per replica).
        env.setdefault("ENVOY_CONCURRENCY", str(workers))
        spawn(
            "envoy",
            [
                str(ROOT / "gateway" / "run_envoy.sh"),
                "--grpc-upstream=" + ",".join(f"127.0.0.1:{port}" for port in upstreams),
                "--openai-upstream=" + ",".join(f"127.0.0.1:{port}" for port in openai_ports),
                f"--listen-address={args.host}",
                f"--listen-port={args.http_port}",
                f"--admin-port={args.admin_port}",
            ],
        )
        _wait(lambda: _envoy_ready(args.admin_port), "Envoy", args, failed_child, lambda: stop_requested)
        if not stop_requested:
            print(_banner(args, plans, workers, settings), flush=True)
        while not stop_requested:
            if not restart_dead_replica():
                print("aigc-service: a replica keeps dying; stopping", file=sys.stderr, flush=True)
                exit_code = 1
                break
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
        # The servers first, all at once: each turns NOT_SERVING, stops taking
        # calls and lets those in flight finish (AIGC_SHUTDOWN_GRACE_SECONDS),
        # while Envoy still carries their answers to the callers - stopped
        # first, it would cut every HTTP stream still being drained. Then
        # Envoy, then redis-server (the last calls' quota releases need it).
        servers = [(name, proc) for name, proc in children if name not in ("envoy", "redis")]
        limit = settings.shutdown_grace_seconds + float(env.get("AIGC_DRAIN_SECONDS") or 2.5) + 20
        _stop_all(servers, limit)
        for name, proc in children:
            if name == "envoy":
                if proc.poll() is None:
                    print("aigc-service: the servers have stopped; stopping Envoy", file=sys.stderr)
                _stop(name, proc)
        for name, proc in children:
            if name == "redis":
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
    _stop_all([(name, proc)], timeout)


def _stop_all(procs: list[tuple[str, subprocess.Popen[bytes]]], timeout: float) -> None:
    """SIGTERM to each at once (they drain side by side), then wait for each; a
    process still there after `timeout` seconds is killed with its group."""
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"aigc-service: {name} ignored SIGTERM for {timeout:.0f}s; killing it", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _metrics_address(replica: int = 0) -> str:
    """Replica `replica`'s metrics host:port (the base port + replica), or "" when off."""
    address = os.environ.get("AIGC_METRICS_ADDRESS", "127.0.0.1:9464").strip()
    if address.lower() == "off":
        return ""
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + replica}"


def _metrics_url(replicas: int = 1) -> str:
    address = _metrics_address()
    if not address:
        return "off (AIGC_METRICS_ADDRESS=off)"
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "localhost"
    if replicas > 1:
        return f"http://{host}:{port}-{int(port) + replicas - 1}/metrics (Prometheus, one port per replica)"
    return f"http://{host}:{port}/metrics (Prometheus)"


def spawn_redis(spawn) -> str:
    """A redis-server on a free loopback port for the replicas' shared quotas; its URL."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise _StartupFailed("replicas with quotas need redis-server (make redis) or AIGC_REDIS_URL")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # In memory only (no dump file in the repo), quiet unless something is wrong.
    options = ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
    spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", *options])
    deadline = time.monotonic() + 10
    while not _in_use(port):
        if time.monotonic() > deadline:
            raise _StartupFailed("redis-server did not start")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0"


def _banner(args: argparse.Namespace, plans: list[tuple[int, list[int]]], workers: int, settings) -> str:
    http = f"http://localhost:{args.http_port}"
    grpc_port = plans[0][0]
    keys = settings.access.keys
    if keys.enabled:
        names = ", ".join(k.name for k in keys.keys)
        auth = f"ON: every call needs `authorization: Bearer <key>` (keys: {names})"
    elif keys.local_without_key:
        key_file = settings.store.data_dir / "caller-key"
        auth = (
            "no keys configured: callers on this machine need none; others send "
            f"`authorization: Bearer <key in {key_file}>` (see README, Security)"
        )
    else:
        auth = "OFF (AIGC_AUTH=off): an open relay, anyone who reaches it is served"
    servers = (
        f"{workers} server process{'es' if workers > 1 else ''} (AIGC_WORKERS)"
        if len(plans) == 1
        else f"{len(plans)} replicas on gRPC ports {', '.join(str(p) for p, _ in plans)}, "
        f"{workers} worker(s) each, behind Envoy"
    )
    return "\n".join(
        [
            "",
            "aigc-service is up (Ctrl-C stops it):",
            f"  gRPC          localhost:{grpc_port}   (grpcurl -plaintext localhost:{grpc_port} list)",
            f"  servers       {servers}",
            f"  auth          {auth}",
            f"  HTTP/JSON     {http}/v1/models",
            f"  OpenAI SDKs   {http}/openai/v1   (base_url; chat/completions, completions, models)",
            f"  playground    {http}/playground",
            f"  Swagger UI    {http}/docs",
            f"  OpenAPI spec  {http}/openapi.json",
            "  logs          this terminal: JSON lines, the server's access log (logger aigc.access)",
            "                and Envoy's (one per HTTP request), joined by request_id",
            f"  metrics       {_metrics_url(len(plans))}",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
