"""`make check-breaking` guards the REST half of the contract too: the real
Makefile target, the real buf, on a copy of the contract in which one RPC's
`post:` path was changed (which `buf breaking` alone lets through)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from tests.support.processes import ROOT

CHAT_RULE = 'post: "/v1/chat:generate"'


@pytest.fixture
def checkout(tmp_path: pathlib.Path) -> pathlib.Path:
    """What `make check-breaking` reads, copied; the installs linked, never rebuilt."""
    for name in ("Makefile", "buf.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    for name in ("proto", "tools"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "build").mkdir()
    shutil.copytree(ROOT / "build" / "googleapis", tmp_path / "build" / "googleapis")
    for name in (".venv", "node_modules"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def check_breaking(workdir: pathlib.Path) -> subprocess.CompletedProcess[str]:
    # -o: take deps and protos-deps as done (they are, in ROOT): nothing is installed.
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "deps", "-o", "protos-deps", "check-breaking"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def service_proto(workdir: pathlib.Path) -> pathlib.Path:
    (path,) = [p for p in (workdir / "proto").rglob("*.proto") if CHAT_RULE in p.read_text()]
    return path


def test_the_unchanged_contract_passes_with_its_http_bindings_checked(checkout: pathlib.Path):
    result = check_breaking(checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HTTP bindings: all 5 of v1.0.0.binpb unchanged" in result.stdout


def test_a_changed_post_path_fails_check_breaking(checkout: pathlib.Path):
    proto = service_proto(checkout)
    proto.write_text(proto.read_text().replace(CHAT_RULE, 'post: "/v1/chat:complete"'))
    result = check_breaking(checkout)
    assert result.returncode != 0, result.stdout + result.stderr
    assert (
        "aigc.v1.AigcService.Chat: the release's HTTP binding POST /v1/chat:generate body='*' is gone "
        "(now: POST /v1/chat:complete body='*')" in result.stderr
    ), result.stderr


def test_a_changed_body_fails_and_a_new_binding_passes(checkout: pathlib.Path):
    proto = service_proto(checkout)
    text = proto.read_text()
    # An additional binding is an addition: old clients still work.
    added = text.replace(
        CHAT_RULE,
        CHAT_RULE + '\n      additional_bindings { post: "/v1/chats:generate" body: "*" }',
    )
    proto.write_text(added)
    assert check_breaking(checkout).returncode == 0
    # body "*" -> a field: the same path now reads another JSON shape.
    changed = text.replace(CHAT_RULE + '\n      body: "*"', CHAT_RULE + '\n      body: "messages"')
    assert changed != text, "the Chat rule's body line moved: update this test"
    proto.write_text(changed)
    result = check_breaking(checkout)
    assert result.returncode != 0
    assert "aigc.v1.AigcService.Chat" in result.stderr, result.stderr
