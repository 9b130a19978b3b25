"""The processes a bench run measures: the fake upstream, Envoy as a plain
reverse proxy (the reference), the peer gateways (Portkey, vllm-router) and
the real stack (scripts/run_stack.py).

Every one is pinned with taskset to the cores the caller names, and stopped on
exit by its own pid (each runs in its own session, so nothing else is hit).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import string
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping

from bench import procfs
from tests.support.processes import Process, free_port, python_env
from tests.support.stack import Stack

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
ENVOY = pathlib.Path(sys.executable).parent / "envoy"

MODEL = "bench"  # gateway model: the upstream's default profile
HOLD_MODEL = "bench-hold"  # gateway model for held-open streams


def hold_profile(gap_ms: int) -> str:
    """The fake upstream's model name for a stream that trickles one chunk per gap_ms for a long time."""
    return f"fake@chunks=10000,first_ms=0,gap_ms={gap_ms}"


def _wait(check, what: str, process: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not process.alive():
            raise RuntimeError(f"{what} exited early:\n{process.output()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s:\n{process.output()}")
        time.sleep(0.05)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def stopping(process: Process) -> Iterator[Process]:
    try:
        yield process
    finally:
        process.stop()
        process.log_path.unlink(missing_ok=True)


class Upstream:
    """bench/upstream/fake_openai.mjs on a free port."""

    def __init__(self, cpus: str, chunks: int, first_ms: int, gap_ms: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["taskset", "-c", cpus, "node", str(BENCH / "upstream" / "fake_openai.mjs")]
        args += [f"--port={self.port}", f"--chunks={chunks}"]
        args += [f"--first-token-ms={first_ms}", f"--chunk-gap-ms={gap_ms}"]
        self.process = Process("fake-upstream", args, os.environ)
        _wait(lambda: f"listening {self.port}" in self.process.output(), "fake upstream", self.process)

    def stats(self, reset: bool = False) -> dict:
        return _get_json(f"{self.base}/stats" + ("?reset=1" if reset else ""))

    def wait_idle(self, timeout: float = 30) -> bool:
        """Until no stream is open (cancelled bursts drain through the gateway)."""
        deadline = time.monotonic() + timeout
        while self.stats()["open"] and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.stats()["open"] == 0


class ReferenceProxy:
    """Envoy with bench/envoy_proxy.yaml: HTTP/1.1 in, HTTP/1.1 to the upstream."""

    def __init__(self, cpus: str, upstream_port: int, folder: pathlib.Path) -> None:
        self.port, admin = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        template = string.Template((BENCH / "envoy_proxy.yaml").read_text())
        config = folder / "envoy-reference.yaml"
        config.write_text(
            template.substitute(LISTEN_PORT=self.port, ADMIN_PORT=admin, UPSTREAM_PORT=upstream_port)
        )
        args = ["taskset", "-c", cpus, str(ENVOY), "-c", str(config), "--disable-hot-restart"]
        args += ["--log-level", "warn"]
        self.process = Process("envoy-reference", args, os.environ)
        _wait(lambda: _ok(f"http://127.0.0.1:{admin}/ready"), "reference Envoy", self.process)
        self.pid = self.process.proc.pid


class Portkey:
    """Portkey's AI gateway (npm @portkey-ai/gateway, pinned in bench/peers/package.json).

    It routes by request headers: provider `openai` with the fake upstream as
    its custom host, and a dummy key (the upstream checks none)."""

    def __init__(self, cpus: str, upstream_port: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers = {
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1",
            "authorization": "Bearer bench",
        }
        start = BENCH / "peers" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
        if not start.exists():
            raise RuntimeError(f"{start} is missing: `make bench-deps` installs it (npm ci in bench/peers)")
        args = ["taskset", "-c", cpus, "node", str(start), f"--port={self.port}", "--headless"]
        self.process = Process("portkey", args, {**os.environ, "NODE_ENV": "production"})
        _wait(lambda: _ok(f"{self.base}/"), "Portkey", self.process)
        self.pid = self.process.proc.pid


class VllmRouter:
    """vllm-router (PyPI, pinned in requirements-bench.txt), its Rust router in front of the upstream."""

    def __init__(self, cpus: str, upstream_port: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers: dict[str, str] = {}
        args = ["taskset", "-c", cpus, sys.executable, str(BENCH / "peers" / "start_vllm_router.py")]
        args += [f"--port={self.port}", f"--worker-url=http://127.0.0.1:{upstream_port}"]
        self.process = Process("vllm-router", args, os.environ)
        _wait(lambda: _ok(f"{self.base}/health"), "vllm-router", self.process, timeout=60)
        self.pid = self.process.proc.pid


def stack_config(folder: pathlib.Path, upstream: Upstream, hold_gap_ms: int) -> pathlib.Path:
    """An AIGC_CONFIG file: one keyless OpenAI-protocol upstream, the two bench models."""
    config = folder / "aigc.toml"
    config.write_text(
        f'default_model = "{MODEL}"\n\n'
        "[upstreams.fake]\n"
        'kind = "openai"\n'
        f'base_url = "{upstream.base}/v1"\n'
        "requires_key = false\n"
        "max_retries = 0\n\n"
        f'[[models]]\nid = "{MODEL}"\nupstream = "fake"\nupstream_model = "fake"\n\n'
        f'[[models]]\nid = "{HOLD_MODEL}"\nupstream = "fake"\n'
        f'upstream_model = "{hold_profile(hold_gap_ms)}"\n'
    )
    return config


class GatewayStack(Stack):
    """tests/support/stack.Stack pinned to `cpus`, with extra run_stack.py arguments.

    Stack builds its command line in __init__; this repeats those few lines
    rather than reach into it, adding the taskset prefix and `extra_args`.
    """

    def __init__(self, env: Mapping[str, str], extra_args: list[str], cpus: str) -> None:
        self.grpc_port, self.http_port, self.admin_port = free_port(), free_port(), free_port()
        self.metrics_port = free_port()
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.openai_port = free_port()
        self.openai = f"http://127.0.0.1:{self.openai_port}"
        args = ["taskset", "-c", cpus, sys.executable, "scripts/run_stack.py", "--host=127.0.0.1"]
        args += [f"--grpc-port={self.grpc_port}", f"--http-port={self.http_port}"]
        args += [f"--admin-port={self.admin_port}", f"--openai-port={self.openai_port}", *extra_args]
        merged = {"AIGC_METRICS_ADDRESS": f"127.0.0.1:{self.metrics_port}", **env}
        Process.__init__(self, "stack", args, python_env(merged))

    def pids(self) -> dict[str, list[int]]:
        """{"server": [...], "envoy": [...]}: run_stack.py's descendants by role (a
        multi-process server is every non-Envoy descendant)."""
        roles: dict[str, list[int]] = {"server": [], "envoy": []}
        for pid, argv in procfs.descendants(self.proc.pid).items():
            roles["envoy" if b"envoy" in argv.split(b" ")[0] else "server"].append(pid)
        return roles

    def server_root(self) -> int:
        """The `python -m server` process that run_stack.py started (py-spy attaches here)."""
        for pid, argv in procfs.descendants(self.proc.pid).items():
            if argv.endswith(b"-m server"):
                return pid
        raise RuntimeError("no `python -m server` under run_stack.py")


@contextlib.contextmanager
def gateway(
    upstream: Upstream, cpus: str, env: Mapping[str, str], args: list[str], hold_gap_ms: int
) -> Iterator[GatewayStack]:
    with tempfile.TemporaryDirectory(prefix="aigc-bench-") as tmp:
        merged = {
            "AIGC_CONFIG": str(stack_config(pathlib.Path(tmp), upstream, hold_gap_ms)),
            "AIGC_LOCAL_ENABLED": "false",  # no llama.cpp eating the gateway's core
            "AIGC_PRESETS": "none",
            "AIGC_SHUTDOWN_GRACE_SECONDS": "2",
            "ENVOY_LOG_LEVEL": "warn",
            # One server process and one Envoy thread per core the gateway is
            # pinned to (more on the same cores would only add switching).
            "AIGC_WORKERS": str(len(procfs.cpu_list(cpus))),
            "ENVOY_CONCURRENCY": str(len(procfs.cpu_list(cpus))),
            **env,
        }
        running = GatewayStack(merged, args, cpus)
        pids: dict[str, list[int]] = {}
        try:
            running.wait_up(timeout=60)
            pids = running.pids()
            yield running
        finally:
            running.stop()
            # run_stack.py stops its children; if it had to be killed they live
            # on in their own sessions: stop exactly those pids.
            for pid in (p for group in pids.values() for p in group):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            running.log_path.unlink(missing_ok=True)
