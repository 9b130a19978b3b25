"""Server reflection v1 and v1alpha with keys on: both need a key (only the
health service's own descriptor answers without, for `grpcurl ... Health/Check`),
tried with a v1-only client (buf curl --reflect-protocol grpc-v1) and grpcurl."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.grpcurl import grpcurl
from tests.support.processes import ROOT, ServerProcess, running_server

KEY = "aigc-reflection-test-key"


@pytest.fixture(scope="module")
def keyed() -> Iterator[ServerProcess]:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    with running_server({"AIGC_API_KEYS": f"tester:{digest}", "AIGC_PRESETS": "none"}) as server:
        yield server


def buf_curl_v1(*args: str) -> subprocess.CompletedProcess[str]:
    buf = str(ROOT / "node_modules" / ".bin" / "buf")
    command = [buf, "curl", "--protocol", "grpc", "--reflect-protocol", "grpc-v1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_reflection_v1_needs_a_key_too(keyed: ServerProcess):
    base = f"http://{keyed.address}"
    anonymous = buf_curl_v1("--list-methods", base)
    assert anonymous.returncode != 0
    # buf words any UNAUTHENTICATED as its own registry's "you are not authenticated".
    assert "not authenticated" in anonymous.stderr, anonymous.stderr
    keyed_call = buf_curl_v1("--reflect-header", f"authorization: Bearer {KEY}", "--list-methods", base)
    assert keyed_call.returncode == 0, keyed_call.stderr
    assert "aigc.v1.AigcService/Chat" in keyed_call.stdout.split()


def test_health_still_answers_without_a_key_through_reflection(keyed: ServerProcess):
    # grpcurl asks reflection (v1 first, then v1alpha) for the health descriptor.
    result = grpcurl(keyed.address, "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert '"status": "SERVING"' in result.stdout
