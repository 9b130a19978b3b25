"""Several server processes on one machine: one per core, one model, one /metrics.

    python -m server                  AIGC_WORKERS workers (default: the machine's cores)

A Python process runs on one core at a time, so N cores need N processes.
The supervisor (this module, the process `python -m server` starts as when
AIGC_WORKERS > 1) does only what must be done once:

- runs the built-in model's llama.cpp server (server/providers/local.py
  `start_llama_server`) and hands every worker its loopback URL and key
  (AIGC_LOCAL_URL, AIGC_LOCAL_KEY): the model is loaded once, not N times,
  and llama.cpp batches every worker's requests in its slots; the same for
  the built-in embedding model (server/providers/local_embedding.py,
  AIGC_LOCAL_EMBEDDING_URL and _KEY), started here up front;
- serves /metrics for all workers together (prometheus_client's multiprocess
  mode: each worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR,
  the supervisor reads them);
- starts the workers (`python -m server` with AIGC_WORKER_INDEX), restarts
  one that dies, and on SIGTERM/SIGINT passes the signal on, waits for every
  worker's graceful drain, then stops the model;
- gives every worker the same environment, complete before the first
  worker is built: the shared quota store (its own redis-server on a unix
  socket when keys have quotas and AIGC_REDIS_URL is unset - otherwise each
  worker would count alone, and a quota would multiply by the worker count),
  the model's URL, one folder of slot locks for the model
  (server/providers/local_slots.py), and its own pid (AIGC_SUPERVISOR_PID),
  by which a worker tells that its supervisor died even when the supervisor
  is pid 1 (a container);
- runs a janitor (server/janitor.py) that, if the supervisor is killed
  (kill -9), waits for the workers' drain and then stops the redis-server and
  removes the temp folder.

Each worker binds the public gRPC address with SO_REUSEPORT - the kernel
spreads direct gRPC clients' connections over the workers - and its own port
on 127.0.0.1 (AIGC_WORKER_PORTS), which Envoy balances per request (round
robin over the workers, with health checks): Envoy multiplexes many requests
over few HTTP/2 connections, which per-connection kernel balancing would
leave on one worker. bench/README.md has the measurement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

from server.config import Settings
from server.observability.settings import ObservabilitySettings

log = logging.getLogger(__name__)

# A worker that dies sooner than this after its start is not restarted at
# once: a crash loop (a bad setting, a taken port) waits, logged.
_MIN_UPTIME = 5.0
_RESTART_DELAY = 1.0


class Worker:
    def __init__(self, index: int, env: Mapping[str, str], janitor: Janitor | None = None) -> None:
        self.index = index
        self._env = {**env, "AIGC_WORKER_INDEX": str(index)}
        self._janitor = janitor
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "server"], env=self._env)
        self.started = time.monotonic()
        if self._janitor is not None:
            self._janitor.watch("worker", self.proc.pid)
        log.info("worker started", extra={"worker": self.index, "pid": self.proc.pid})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)


def run(settings: Settings, observability: ObservabilitySettings) -> int:
    """Supervises `settings.workers` workers until SIGTERM/SIGINT; returns the exit code."""
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda sig, _frame: stop.append(sig))
    signal.signal(signal.SIGINT, lambda sig, _frame: stop.append(sig))
    metrics_dir = tempfile.mkdtemp(prefix="aigc-metrics-")
    # Cleans up the folder and the private redis-server if this process is
    # killed without a chance to (server/janitor.py).
    janitor = Janitor(metrics_dir, settings.shutdown_grace_seconds)
    llama = None
    embedder = None
    metrics = None
    redis: subprocess.Popen[bytes] | None = None
    workers: list[Worker] = []
    try:
        env = _worker_env(settings, metrics_dir)
        access = settings.access
        if (
            access.keys.enabled
            and not access.redis_url
            and any(not k.limits.unlimited for k in access.keys.keys)
        ):
            # Quotas must hold over every worker: one store they all share.
            redis, env["AIGC_REDIS_URL"] = _private_redis(metrics_dir)
            janitor.watch("redis", redis.pid)
        if settings.local.enabled and not settings.local.url:
            from server.providers.local import start_llama_server  # only when there is a model to run

            llama, url, key = start_llama_server(settings.local, settings.log_level == "DEBUG")
            env["AIGC_LOCAL_URL"], env["AIGC_LOCAL_KEY"] = url, key
        if settings.local.enabled and not settings.local.slots_dir:
            # One pool of the model's slots for every worker (server/providers/local_slots.py).
            env["AIGC_LOCAL_SLOTS_DIR"] = os.path.join(metrics_dir, "local-slots")
        # Built only now, with the environment complete: a worker built
        # earlier would miss the shared quota store (and count its own).
        if settings.local_embedding.enabled and not settings.local_embedding.url:
            embedder = _start_embedding_model(settings, env)
        workers = [Worker(i, env, janitor) for i in range(settings.workers)]
        metrics = _serve_metrics(observability.metrics_address, metrics_dir)
        for worker in workers:
            worker.start()
        log.info(
            "supervising workers",
            extra={
                "workers": settings.workers,
                "address": settings.grpc_address,
                "worker_ports": list(settings.worker_ports),
                "metrics_port": metrics.server_port if metrics else None,
            },
        )
        while not stop:
            for worker in workers:
                if not worker.alive():
                    _restart(worker, metrics_dir)
            time.sleep(0.2)
        log.info("stopping workers", extra={"grace_seconds": settings.shutdown_grace_seconds})
        for worker in workers:
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + settings.shutdown_grace_seconds + 10
        for worker in workers:
            if worker.proc is None:
                continue
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker ignored SIGTERM; killing it", extra={"worker": worker.index})
                worker.proc.kill()
                worker.proc.wait()
        return 0
    finally:
        for worker in workers:
            worker.signal(signal.SIGKILL)
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        # Dropping the last reference stops llama.cpp's HTTP and decode loops.
        llama = embedder = None  # noqa: F841
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        janitor.dismiss()
        log.info("stopped")


def _worker_env(settings: Settings, metrics_dir: str) -> dict[str, str]:
    """What every worker's environment holds besides ours; the caller adds the
    shared quota store and the local model's URL before any worker is built."""
    env = dict(os.environ)
    env["AIGC_WORKERS"] = str(settings.workers)
    env["AIGC_WORKER_PORTS"] = ",".join(map(str, settings.worker_ports))
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # A worker tells the supervisor's death by its parent changing from this
    # pid (server/__main__.py): comparing with 1 breaks when the supervisor
    # IS pid 1, as in a container.
    env["AIGC_SUPERVISOR_PID"] = str(os.getpid())
    return env


class Janitor:
    """server/janitor.py in a child process, told each worker's and redis-server's pid.

    It reads a pipe that only this process writes: end of file without
    "done" means the supervisor died (kill -9), and the janitor then waits for
    the workers' drain, stops redis-server and removes the temp folder. A
    pipe, unlike PR_SET_PDEATHSIG, works whatever our pid is (1 in a
    container) and cannot miss a death that happened before it started.
    """

    def __init__(self, folder: str, grace_seconds: float) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "server.janitor", folder, str(grace_seconds)],
            stdin=subprocess.PIPE,
        )
        assert self._proc.stdin is not None
        self._pipe = self._proc.stdin

    def watch(self, role: str, pid: int) -> None:
        self._tell(f"{role} {pid}")

    def dismiss(self) -> None:
        """A clean stop: the supervisor has cleaned up itself."""
        self._tell("done")
        with contextlib.suppress(OSError):
            self._pipe.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _tell(self, line: str) -> None:
        try:
            self._pipe.write(f"{line}\n".encode())
            self._pipe.flush()
        except OSError:  # the janitor is gone: the supervisor still cleans up on a clean stop
            log.warning("the janitor process is gone; a kill -9 of the supervisor would leave files behind")


def _start_embedding_model(settings: Settings, env: dict[str, str]):
    """The built-in embedding model's server, its URL and key put in `env` for the workers.

    A failure (the model's wheel missing, an unwritable cache) is logged and does not stop
    the service: chat works on, and each worker's Embed then says what is wrong
    (server/providers/local_embedding.py starts it there on first use).
    """
    from server.envvars import ConfigError
    from server.providers.local_embedding import start_embedding_server

    try:
        server, url, key = start_embedding_server(settings.local_embedding, settings.log_level == "DEBUG")
    except (OSError, ConfigError, RuntimeError) as exc:
        log.error("the built-in embedding model did not start", extra={"error": str(exc)})
        return None
    env["AIGC_LOCAL_EMBEDDING_URL"], env["AIGC_LOCAL_EMBEDDING_KEY"] = url, key
    return server


def _private_redis(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on a unix socket only the workers use, for their shared quotas."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "aigc-service: quotas with several workers need one store they share: set AIGC_REDIS_URL, "
            "install redis-server (Debian: apt-get install redis-server; `make redis`), or AIGC_WORKERS=1"
        )
    socket = os.path.join(folder, "quotas.sock")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            socket,
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(socket):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("aigc-service: the private redis-server for quotas did not start")
        time.sleep(0.05)
    log.info("quotas shared by the workers through a private redis-server", extra={"socket": socket})
    return proc, f"unix://{socket}"


def _restart(worker: Worker, metrics_dir: str) -> None:
    code = worker.proc.returncode if worker.proc else None
    uptime = time.monotonic() - worker.started
    log.error(
        "worker exited; restarting it", extra={"worker": worker.index, "exit_code": code, "uptime_s": uptime}
    )
    if worker.proc is not None:
        from prometheus_client import multiprocess

        # Its live gauges (streams in flight) no longer count.
        multiprocess.mark_process_dead(worker.proc.pid, metrics_dir)
    if uptime < _MIN_UPTIME:
        time.sleep(_RESTART_DELAY)
    worker.start()


def _serve_metrics(address: str | None, metrics_dir: str):
    """/metrics aggregated over every worker's samples, on `address`."""
    if address is None:
        return None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from server.envvars import split_host_port

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir)
    host, port = split_host_port(address)
    try:
        httpd, _thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        log.error("metrics endpoint not started", extra={"address": address, "error": str(exc)})
        return None
    return httpd


__all__ = ["run"]
