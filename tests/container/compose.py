"""`docker compose` on the shipped docker-compose.yml, as a user runs it.

The only inputs are the file's documented variables: host ports (free ones,
so a developer's `make run` on 8000/9000 is left alone) and, for the quota
check, AIGC_CONFIG_FILE. Nothing else is overridden.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence

from tests.container.engine import Engine, say
from tests.support.processes import ROOT, free_port

PROJECT = "aigc-service"  # the file's `name:`


class Compose:
    def __init__(self, engine: Engine, profiles: Sequence[str] = (), **variables: str) -> None:
        self.engine = engine
        self.profiles = list(profiles)
        self.ports = {
            "grpc": free_port(),
            "grpc_2": free_port(),
            "http": free_port(),
            "prometheus": free_port(),
        }
        self.variables = {
            "AIGC_GRPC_PORT": str(self.ports["grpc"]),
            "AIGC_GRPC_PORT_2": str(self.ports["grpc_2"]),
            "AIGC_HTTP_PORT": str(self.ports["http"]),
            "AIGC_PROMETHEUS_PORT": str(self.ports["prometheus"]),
            **variables,
        }

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 900, **kwargs
    ) -> subprocess.CompletedProcess:
        profile_args = [arg for profile in self.profiles for arg in ("--profile", profile)]
        env = {**self.engine.env, **self.variables}
        files = ["--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]
        command = ["/usr/bin/docker", "compose", *files, *profile_args, *args]
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=check, **kwargs
        )

    def up(self) -> float:
        started = time.monotonic()
        result = self("up", "--detach", "--wait", "--wait-timeout", "240", check=False)
        took = time.monotonic() - started
        if result.returncode != 0:
            message = f"docker compose up --wait exited {result.returncode}:\n{result.stderr[-3000:]}"
            raise AssertionError(f"{message}\n{self.logs()}")
        return took

    def down(self, every_profile: bool = False) -> subprocess.CompletedProcess:
        """`down` of this stack's profiles, or of every profile (what an earlier run may have left)."""
        args = ["--profile", "*"] if every_profile else []
        return self(
            *args, "down", "--volumes", "--remove-orphans", "--timeout", "20", check=False, timeout=300
        )

    def logs(self, *services: str) -> str:
        result = self("logs", "--no-color", "--tail", "60", *services, check=False, timeout=60)
        return result.stdout[-8000:] + result.stderr[-2000:]

    def exec(self, service: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self("exec", "-T", service, *command, check=check, timeout=120)

    def caller_key(self, service: str = "server") -> str:
        """The key the server generated in /data/caller-key, or "" where this server has none."""
        result = self.exec(service, "sh", "-c", "cat /data/caller-key 2>/dev/null || true")
        return result.stdout.strip()

    def container(self, service: str) -> str:
        return self("ps", "--quiet", service).stdout.strip()


@contextlib.contextmanager
def running_stack(compose: Compose) -> Iterator[Compose]:
    """`up --wait`; on the way out `down` (its exit code is checked by the tests that care)."""
    compose.down(every_profile=True)  # whatever an interrupted run left
    profiles = "".join(f"--profile {p} " for p in compose.profiles)
    say(f"docker compose {profiles}up --detach --wait")
    try:
        compose.took = compose.up()
        say(f"healthy after {compose.took:.1f} s")
        yield compose
    finally:
        if not getattr(compose, "downed", False):
            compose.down(every_profile=True)
