"""The image itself: its native libraries load, it runs as non-root under an init, EXPOSE is right."""

from __future__ import annotations

import json

from tests.container.engine import Engine, say


def inspect(engine: Engine, image: str) -> dict:
    return json.loads(engine.docker("image", "inspect", image).stdout)[0]["Config"]


def test_every_native_library_of_the_image_resolves_and_imports(engine, image):
    """issue 14 (1): `import xllamacpp` failed for want of libgomp.so.1."""
    result = engine.docker("run", "--rm", image, "python", "scripts/check_native_libs.py", check=False)
    say(result.stdout.strip() or result.stderr.strip())
    assert result.returncode == 0, result.stderr


def test_the_image_runs_as_non_root_under_tini(engine, image):
    """issue 14 (2): with `python -m server` as PID 1 every worker killed itself."""
    config = inspect(engine, image)
    assert config["User"] == "aigc"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    result = engine.docker("run", "--rm", image, "sh", "-c", "id -u; tr '\\0' ' ' < /proc/1/cmdline")
    uid, pid1 = result.stdout.splitlines()
    say(f"uid {uid}; PID 1: {pid1.strip()}")
    assert uid == "10001" and pid1.startswith("/usr/bin/tini -- sh")


def test_expose_lists_every_port_the_stack_uses(engine, image):
    exposed = set(inspect(engine, image)["ExposedPorts"])
    assert exposed == {f"{port}/tcp" for port in (8000, 9000, 9001, 9002, 9100, 9464)}
