"""A real PostgreSQL (Debian's `postgresql`, `make postgres`) in a temp dir, for tests.

    with running_postgres() as pg:            # accepting connections before the block
        url = pg.create_database()            # a fresh, empty database per test
        pg.kill(); pg.start()                 # an outage, and back (data kept)

`initdb` makes a throwaway cluster (trust auth, loopback only, no fsync);
PostgreSQL refuses to run as root, so under root the server runs as `nobody`.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

from tests.support.processes import Process, free_port

_USER = "aigc"
_counter = itertools.count()


def postgres_bin() -> str:
    """Debian installs the server outside PATH: /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    assert found, "PostgreSQL is missing: `make postgres` installs Debian's package"
    return os.path.dirname(found[-1])


class PostgresServer:
    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self._dir = tempfile.mkdtemp(prefix="postgres-")
        self.data = os.path.join(self._dir, "data")
        self.process: Process | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self._dir, "nobody")
            os.chmod(self._dir, 0o700)
            # setpriv execs (no fork, unlike runuser), so signals reach postgres itself.
            self._as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        initdb = [f"{self.bin}/initdb", "-D", self.data, "-U", _USER, "--auth=trust"]
        subprocess.run(
            [*self._as_user, *initdb, "-E", "UTF8", "--locale=C.UTF-8"],
            check=True,
            capture_output=True,
            cwd=self._dir,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30) -> None:
        assert self.process is None or not self.process.alive(), "already running"
        args = [*self._as_user, f"{self.bin}/postgres", "-D", self.data, "-k", self._dir]
        args += ["-p", str(self.port)]
        args += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]
        self.process = Process("postgres", args, os.environ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"postgres exited early:\n{self.process.output()}")
            ready = subprocess.run(
                [f"{self.bin}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", _USER],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"postgres not ready in {timeout}s:\n{self.process.output()}")

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"test_{os.getpid()}_{next(_counter)}"
        subprocess.run(
            [f"{self.bin}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", _USER, name],
            check=True,
            capture_output=True,
        )
        return self.url(name)

    def kill(self) -> None:
        """SIGKILL the postmaster (its children exit when they notice): an outage."""
        if self.process is not None and self.process.alive():
            # The whole process group (postgres runs in its own session): the
            # postmaster and its backends, which would otherwise hold the port.
            os.killpg(self.process.proc.pid, signal.SIGKILL)
            self.process.proc.wait()

    def stop(self) -> None:
        if self.process is not None:
            # SIGINT: PostgreSQL's "fast" shutdown (SIGTERM waits for clients to leave).
            self.process.stop(signal.SIGINT)
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
