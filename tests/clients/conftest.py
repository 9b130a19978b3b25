"""The Python client as a user gets it: its wheel, built once from
clients/python (`pip wheel`), installed into a fresh virtual environment and
used against the real server.

One venv per session (creating it and installing grpcio takes a while). Its
interpreter and its `aigc` console script run as subprocesses with no
PYTHONPATH and a working directory outside the repository, so they import
only what the wheel installed - never gen/python or clients/python/src.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import venv
from collections.abc import Iterator

import pytest

from tests.support.processes import ROOT, ServerProcess, running_server


@dataclasses.dataclass(frozen=True)
class ClientVenv:
    path: pathlib.Path
    workdir: pathlib.Path
    #: The wheel it was installed from.
    wheel: pathlib.Path

    @property
    def python(self) -> pathlib.Path:
        return self.path / "bin" / "python"

    @property
    def aigc(self) -> pathlib.Path:
        return self.path / "bin" / "aigc"

    def env(self) -> dict[str, str]:
        """The environment of a user's shell with this venv: no PYTHONPATH, no repo paths."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "AIGC_SERVER")}
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.path)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(
        self, *args: str | os.PathLike[str], timeout: float = 120, **kwargs
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> ClientVenv:
    """A fresh venv with the client's wheel installed (runtime deps pinned by constraints.txt)."""
    base = tmp_path_factory.mktemp("client-venv")
    # The wheel, as `pip wheel ./clients/python` builds it (with this
    # environment's pinned hatchling: no build isolation, nothing fetched).
    wheels = base / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT / "clients" / "python"),
        ],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, f"pip wheel ./clients/python failed:\n{build.stdout}\n{build.stderr}"
    (wheel,) = wheels.glob("aigc_client-*.whl")
    path = base / "venv"
    venv.EnvBuilder(with_pip=True).create(path)
    install = subprocess.run(
        [
            str(path / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            str(wheel),
        ],
        cwd=base,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, f"pip install {wheel.name} failed:\n{install.stdout}\n{install.stderr}"
    workdir = base / "work"
    workdir.mkdir()
    return ClientVenv(path, workdir, wheel)


@pytest.fixture(scope="session")
def cli_server() -> Iterator[ServerProcess]:
    """A server whose local model has ONE slot: a request that is still
    generating would hold up the next one, so a prompt answer after Ctrl-C
    shows the slot was freed."""
    with running_server({"AIGC_LOCAL_PARALLEL": "1", "AIGC_PRESETS": "none"}) as process:
        yield process
