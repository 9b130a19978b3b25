"""The whole service as `make run` starts it (scripts/run_stack.py), on free ports."""

from __future__ import annotations

import collections
import contextlib
import pathlib
import sys
import time
from collections.abc import Iterator, Mapping

from bench import procfs
from tests.support.processes import Process, free_port, free_ports, python_env


class Stack(Process):
    """`replicas` > 1: that many servers behind the one Envoy (`make run REPLICAS=2`);
    replica r answers gRPC on `replica_addresses[r]` and metrics on `metrics_port + r`."""

    def __init__(
        self, env: Mapping[str, str] | None = None, *, replicas: int = 1, host: str = "127.0.0.1"
    ) -> None:
        merged = {"AIGC_WORKERS": "1", **(env or {})}
        workers = int(merged["AIGC_WORKERS"])
        # run_stack.py numbers replica r's ports from grpc_port + r * (workers + 1).
        span = replicas * (workers + 1) if replicas > 1 else 1
        self.grpc_port = free_ports(span) if replicas > 1 else free_port()
        self.http_port, self.admin_port = free_port(), free_port()
        self.metrics_port = free_ports(replicas)
        # Replica r's OpenAI-compatible door: openai_port + r (Envoy serves it under /openai/v1).
        self.openai_port = free_ports(replicas)
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.replica_addresses = [f"127.0.0.1:{self.grpc_port + r * (workers + 1)}" for r in range(replicas)]
        args = [
            sys.executable,
            "scripts/run_stack.py",
            f"--host={host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--admin-port={self.admin_port}",
            f"--replicas={replicas}",
            f"--openai-port={self.openai_port}",
        ]
        merged.setdefault("AIGC_METRICS_ADDRESS", f"127.0.0.1:{self.metrics_port}")
        if workers > 1 and replicas == 1 and "AIGC_WORKER_PORTS" not in merged:
            merged["AIGC_WORKER_PORTS"] = ",".join(str(free_port()) for _ in range(workers))
        super().__init__("stack", args, python_env(merged))

    def pids(self) -> dict[str, list[int]]:
        """The live processes of the stack by role: "replica-R" (its server processes,
        told apart by the gRPC address in their environment) and "envoy"."""
        roles: dict[str, list[int]] = collections.defaultdict(list)
        ports = {addr.rpartition(":")[2]: f"replica-{r}" for r, addr in enumerate(self.replica_addresses)}
        for pid, argv in procfs.descendants(self.proc.pid).items():
            if b"envoy" in argv.split(b" ")[0]:
                roles["envoy"].append(pid)
                continue
            if b"-m server" not in argv:
                continue
            with contextlib.suppress(OSError):  # it may have just exited
                for item in pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    if item.startswith(b"AIGC_GRPC_ADDRESS="):
                        role = ports.get(item.decode().rpartition(":")[2])
                        if role:
                            roles[role].append(pid)
        return roles  # a role with no process: []

    def wait_up(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while "aigc-service is up" not in self.output():
            if not self.alive():
                raise RuntimeError(f"stack exited early:\n{self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"stack not up after {timeout}s:\n{self.output()}")
            time.sleep(0.1)


@contextlib.contextmanager
def running_stack(
    env: Mapping[str, str] | None = None, *, replicas: int = 1, host: str = "127.0.0.1"
) -> Iterator[Stack]:
    """`host`: what the server and Envoy listen on (0.0.0.0: every address of the machine)."""
    stack = Stack(env, replicas=replicas, host=host)
    try:
        stack.wait_up()
        yield stack
    finally:
        stack.stop()
