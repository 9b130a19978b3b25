"""The safe-by-default rule (issue 13 point 1), on real processes and a real non-loopback address.

With no caller keys configured (AIGC_AUTH=auto), callers on this machine are served
without a key and every other caller needs the key the server generated in
$AIGC_DATA_DIR/caller-key. The server is bound to every address and called once over
loopback and once over this machine's own non-loopback address (the kernel gives
that connection the non-loopback source address), directly and through Envoy.
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
import socket
import stat
from collections.abc import Iterator

import grpc
import httpx
import pytest

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc
from server.observability.settings import ObservabilitySettings
from tests.proxies.env import isolated_env
from tests.support.processes import ServerProcess, free_port
from tests.support.stack import running_stack
from tests.support.status import error_info

HEADER = "x-aigc-client-address"


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the host's eth address)."""
    try:
        names = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        names = []
    candidates = [info[4][0] for info in names]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing address
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    for candidate in candidates:
        if not ipaddress.ip_address(candidate).is_loopback:
            return candidate
    return None


REMOTE = non_loopback_address()
pytestmark = pytest.mark.skipif(REMOTE is None, reason="this machine has no non-loopback IPv4 address")


def start(env: dict[str, str], port: int) -> ServerProcess:
    """The server with `env`, listening on every address at `port`; waits until it serves."""
    process = ServerProcess({**env, "AIGC_GRPC_ADDRESS": f"0.0.0.0:{port}"})
    process.address = f"127.0.0.1:{port}"
    process.wait_serving()
    return process


def base_env(data_dir: pathlib.Path, **extra: str) -> dict[str, str]:
    return isolated_env(
        OPENAI_API_KEY="sk-vendor-never-reached",
        AIGC_DEFAULT_MODEL="gpt-4o-mini",
        AIGC_DATA_DIR=str(data_dir),
        AIGC_METRICS_ADDRESS=f"127.0.0.1:{free_port()}",
        **extra,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("data")
    port, door = free_port(), free_port()
    process = start(base_env(data, AIGC_OPENAI_ADDRESS=f"0.0.0.0:{door}"), port)
    process.data_dir = data  # type: ignore[attr-defined]
    process.port, process.door = port, door  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        process.stop()


def list_models(host: str, port: int, metadata=()) -> pb.ListModelsResponse:
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = aigc_service_pb2_grpc.AigcServiceStub(channel)
        return stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10)


def refusal(host: str, port: int, metadata=()) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list_models(host, port, metadata)
    return caught.value


def caller_key(data_dir: pathlib.Path) -> str:
    return (data_dir / "caller-key").read_text().strip()


def test_loopback_is_served_without_a_key(server):
    assert list_models("127.0.0.1", server.port).models


def test_a_non_loopback_caller_without_a_key_is_told_what_to_do(server):
    error = refusal(REMOTE, server.port)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "API_KEY_MISSING"
    message = error.details()
    assert "authorization: Bearer" in message and "caller-key" in message
    assert "AIGC_AUTH=off" in message and "[[keys]]" in message


def test_the_generated_key_serves_a_non_loopback_caller_and_is_never_logged(server):
    key_file = server.data_dir / "caller-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = caller_key(server.data_dir)
    assert list_models(REMOTE, server.port, [("authorization", f"Bearer {key}")]).models
    wrong = refusal(REMOTE, server.port, [("authorization", "Bearer aigc-wrong")])
    assert error_info(wrong).reason == "API_KEY_INVALID"
    output = server.output()
    assert key not in output
    warnings = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    loud = [line for line in warnings if line["level"] == "WARNING" and "caller-key" in line["message"]]
    assert loud and str(key_file) in loud[0]["message"]


def test_a_forged_client_address_from_an_untrusted_peer_is_ignored(server):
    error = refusal(REMOTE, server.port, [(HEADER, "127.0.0.1")])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_loopback_peer_is_trusted_to_name_the_client(server):
    # Envoy on this machine says who its caller was: a remote caller needs the key.
    error = refusal("127.0.0.1", server.port, [(HEADER, "203.0.113.7")])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert list_models("127.0.0.1", server.port, [(HEADER, "127.0.0.1")]).models


def test_the_openai_door_follows_the_same_rule(server):
    for host, expected in (("127.0.0.1", 200), (REMOTE, 401)):
        reply = httpx.get(f"http://{host}:{server.door}/openai/v1/models", timeout=10)
        assert reply.status_code == expected, reply.text
    forged = httpx.get(f"http://{REMOTE}:{server.door}/openai/v1/models", headers={HEADER: "127.0.0.1"})
    assert forged.status_code == 401
    key = caller_key(server.data_dir)
    keyed = httpx.get(
        f"http://{REMOTE}:{server.door}/openai/v1/models", headers={"authorization": f"Bearer {key}"}
    )
    assert keyed.status_code == 200


def test_trusted_proxies_may_name_the_client(tmp_path):
    port = free_port()
    process = start(base_env(tmp_path, AIGC_TRUSTED_PROXIES=f"{REMOTE}/32"), port)
    try:
        assert list_models(REMOTE, port, [(HEADER, "127.0.0.1")]).models
        assert refusal(REMOTE, port, [(HEADER, "203.0.113.7")]).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        process.stop()


def test_auth_off_serves_everyone_and_says_open_relay(tmp_path):
    port = free_port()
    process = start(base_env(tmp_path, AIGC_AUTH="off"), port)
    try:
        assert list_models(REMOTE, port).models
    finally:
        process.stop()
    lines = [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]
    assert any(line["level"] == "WARNING" and "open relay" in line["message"] for line in lines)
    assert not (tmp_path / "caller-key").exists()


def test_two_servers_sharing_a_data_dir_share_one_key(tmp_path):
    processes = [ServerProcess(base_env(tmp_path)) for _ in range(2)]
    try:
        for process in processes:
            process.wait_serving()
    finally:
        for process in processes:
            process.stop()
    key = caller_key(tmp_path)
    assert key.startswith("aigc-")
    # One key file, no leftover temp names (the call store's database may sit beside it).
    assert [path.name for path in tmp_path.iterdir() if "key" in path.name] == ["caller-key"]


def test_metrics_listen_on_loopback_by_default():
    assert ObservabilitySettings.from_env({}).metrics_address == "127.0.0.1:9464"


def test_envoy_overwrites_a_forged_client_address(tmp_path):
    env = base_env(tmp_path)
    del env["AIGC_METRICS_ADDRESS"]
    with running_stack(env, host="0.0.0.0") as stack:
        local = f"http://127.0.0.1:{stack.http_port}"
        remote = f"http://{REMOTE}:{stack.http_port}"
        assert httpx.get(f"{local}/v1/models", timeout=10).status_code == 200
        for headers in ({}, {HEADER: "127.0.0.1"}, {"x-forwarded-for": "127.0.0.1"}):
            reply = httpx.get(f"{remote}/v1/models", headers=headers, timeout=10)
            assert reply.status_code == 401, (headers, reply.text)
            assert reply.json()["details"][0]["reason"] == "API_KEY_MISSING"
        key = caller_key(tmp_path)
        keyed = httpx.get(f"{remote}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10)
        assert keyed.status_code == 200
        door = httpx.get(f"{remote}/openai/v1/models", headers={HEADER: "127.0.0.1"}, timeout=10)
        assert door.status_code == 401
        assert httpx.get(f"{local}/openai/v1/models", timeout=10).status_code == 200
