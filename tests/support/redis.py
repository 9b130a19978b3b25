"""A real `redis-server` (Debian's package, `make redis`) on a free port, for tests.

    with running_redis() as redis:      # PONG before the block starts
        store = RedisQuotaStore(redis.url)
        redis.kill()                    # SIGKILL: what an outage looks like
        redis.start()                   # back on the same port, empty
        redis.pause(); redis.resume()   # SIGSTOP/SIGCONT: a store that hangs

Nothing is persisted (`--save ''`, no AOF): a restart starts empty, like a
fresh Redis. Only loopback is bound.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator

from tests.support.processes import Process, free_port


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: `make redis` installs Debian's package"
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="redis-")
        self.process: Process | None = None

    def start(self, timeout: float = 10) -> None:
        assert self.process is None or not self.process.alive(), "already running"
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        args += ["--dir", self._dir, "--loglevel", "warning"]
        self.process = Process("redis", args, os.environ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"redis-server exited early:\n{self.process.output()}")
            if self.ping():
                return
            time.sleep(0.02)
        raise TimeoutError(f"redis-server did not answer PING in {timeout}s:\n{self.process.output()}")

    def ping(self) -> bool:
        """PING over a plain socket (no client library: this checks the server, not redis-py)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, and wait for the port to refuse connections."""
        if self.process is not None:
            self.process.stop(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        assert self.process is not None
        os.kill(self.process.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.alive():
                self.resume()  # a stopped process cannot act on SIGTERM
            self.process.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
