"""`python -m server`: run the gRPC server until SIGINT/SIGTERM.

With AIGC_WORKERS > 1 (the default on a machine with several cores) this
process is the supervisor of that many workers (server/supervisor.py); each
worker is `python -m server` again, with AIGC_WORKER_INDEX set.
"""

import logging
import sys

import uvloop

from server.app import serve
from server.config import ConfigError, Settings
from server.observability import ObservabilitySettings, configure_logging


def main() -> int:
    try:
        settings = Settings.from_env()
        observability = ObservabilitySettings.from_env()
    except ConfigError as exc:
        print(f"aigc-service: bad configuration: {exc}", file=sys.stderr)
        return 2
    # JSON lines on stdout (AIGC_LOG_FORMAT=console for people): one access
    # line per RPC plus application logs, all with the request id.
    configure_logging(settings.log_level, observability.log_format, worker=settings.worker_index)
    # HTTP client libraries log per request or trace connections at DEBUG
    # (with proxy credentials in them): never below WARNING, even at DEBUG.
    for name in ("aiohttp", "aiohttp_socks", "python_socks", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _raise_open_file_limit()
    if settings.worker_index is not None:
        _die_with_supervisor()
    if settings.workers > 1 and settings.worker_index is None:
        from server import supervisor

        return supervisor.run(settings, observability)
    # uvloop: measured ~35% less CPU per upstream stream than asyncio's own
    # loop (bench/README.md); grpc.aio runs on it unchanged.
    uvloop.run(serve(settings, observability))
    return 0


def _die_with_supervisor() -> None:
    """A worker whose supervisor was killed (SIGKILL: no chance to stop its
    workers) gets SIGTERM from the kernel and drains, instead of serving on
    as an orphan that holds the ports a restarted supervisor needs (Linux
    prctl PR_SET_PDEATHSIG; elsewhere a no-op).

    The supervisor may have died before prctl took effect: then our parent
    is no longer the supervisor's pid (AIGC_SUPERVISOR_PID). Comparing with
    1 instead would be wrong where the supervisor itself is pid 1 (a
    container's init): every worker would stop itself at start."""
    import ctypes
    import os
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    supervisor = os.environ.get("AIGC_SUPERVISOR_PID", "")
    if supervisor.isdigit() and os.getppid() != int(supervisor):
        os.kill(os.getpid(), signal.SIGTERM)


def _raise_open_file_limit() -> None:
    """Every open stream holds two sockets (the caller's, the vendor's): a
    soft limit of 1024 files would refuse the 513th concurrent stream. Raise
    it to the hard limit, which needs no privilege."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
