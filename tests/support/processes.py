"""Start the real server (and friends) as subprocesses, and always stop them.

Tests use these instead of in-process fakes of our own code: the server runs
exactly as `make run` runs it, on a free port, and its output is captured so
a failing test can show it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = pathlib.Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (for a plan that numbers ports from a base)."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'gen' / 'python'}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Process:
    """A child process whose combined output goes to a temp file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str]) -> None:
        self.name = name
        self._log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.log_path = pathlib.Path(self._log.name)
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class ServerProcess(Process):
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        merged = python_env(
            {
                "AIGC_GRPC_ADDRESS": self.address,
                "AIGC_SHUTDOWN_GRACE_SECONDS": "3",
                # One process unless a test asks for workers (tests/server/test_supervisor.py).
                "AIGC_WORKERS": "1",
                "AIGC_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
                "AIGC_OPENAI_ADDRESS": f"127.0.0.1:{free_port()}",
                **(env or {}),
            }
        )
        # host:port of /metrics, or "off"; of the OpenAI-compatible door, or "off".
        self.metrics_address = merged["AIGC_METRICS_ADDRESS"]
        self.openai_address = merged["AIGC_OPENAI_ADDRESS"]
        super().__init__("server", [sys.executable, "-m", "server"], merged)

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"server exited early:\n{self.output()}")
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(
                        health_pb2.HealthCheckRequest(service="aigc.v1.AigcService"), timeout=1
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.1)
        raise TimeoutError(f"server not serving after {timeout}s:\n{self.output()}")


@contextlib.contextmanager
def running_server(env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    server = ServerProcess(env)
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()
