"""The container tests: a real engine, the image built from this checkout, compose up.

Run by `make test-container` (and so by .ci/run), not by `make test`'s plain
pytest run: they need root, install Debian packages and take minutes. The
engine is stopped and the host network restored after the last test, when a
check fails, and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.container.compose import Compose
from tests.container.engine import Engine, running_engine, say
from tests.container.standins import build_standins

if os.environ.get("AIGC_CONTAINER_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    if os.geteuid() != 0:
        pytest.fail("the container tests start dockerd and change iptables: run them as root")
    with running_engine() as engine:
        previous = {}

        def stop_and_exit(signum, frame):  # the finally below would not run on a signal
            say(f"signal {signum}: stopping the engine and restoring the host network")
            engine.stop()
            pytest.exit(f"stopped by signal {signum}", returncode=128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop_and_exit)
        try:
            build_standins(engine)
            yield engine
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    """aigc-service:dev, built by `docker compose build` from this checkout."""
    say("docker compose build (the project's Dockerfile, from this checkout)")
    result = Compose(engine)("build", check=False, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"docker compose build exited {result.returncode}:\n{result.stderr[-6000:]}")
    return "aigc-service:dev"
