"""Several workers under one supervisor: one model, every worker serving, one /metrics,
a dead worker replaced, a clean stop - the real `python -m server` with AIGC_WORKERS=2."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigc.v1 import aigc_service_pb2 as pb
from aigc.v1 import aigc_service_pb2_grpc, content_pb2, generation_pb2
from tests.support.processes import ServerProcess, free_port


def ask(address: str) -> pb.ChatResponse:
    with grpc.insecure_channel(address) as channel:
        request = pb.ChatRequest(
            messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content="hi")],
            generation_config=generation_pb2.GenerationConfig(max_output_tokens=2),
        )
        return aigc_service_pb2_grpc.AigcServiceStub(channel).Chat(request, timeout=30)


def serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def lines(server: ServerProcess) -> list[dict]:
    return [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def supervised() -> Iterator[tuple[ServerProcess, list[int], int]]:
    ports, metrics = [free_port(), free_port()], free_port()
    server = ServerProcess(
        {
            "AIGC_WORKERS": "2",
            "AIGC_WORKER_PORTS": ",".join(map(str, ports)),
            "AIGC_METRICS_ADDRESS": f"127.0.0.1:{metrics}",
            "AIGC_PRESETS": "none",
        }
    )
    try:
        deadline = time.monotonic() + 90
        while not all(serving(f"127.0.0.1:{p}") for p in ports):
            assert server.alive(), server.output()
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        yield server, ports, metrics
    finally:
        server.stop()


def test_one_model_serves_every_worker(supervised):
    server, ports, _ = supervised
    loaded = [line for line in lines(server) if line["message"] == "local model loaded"]
    assert len(loaded) == 1, "the model is loaded once, by the supervisor"
    assert "worker" not in loaded[0]
    serving_lines = [line for line in lines(server) if line["message"] == "serving aigc.v1.AigcService"]
    assert sorted(line["worker"] for line in serving_lines) == [0, 1]
    for port in ports:
        assert ask(f"127.0.0.1:{port}").usage.completion_tokens > 0
    # The shared public port reaches a worker too (SO_REUSEPORT).
    assert ask(server.address).usage.completion_tokens > 0
    workers = {line.get("worker") for line in lines(server) if line.get("logger") == "aigc.access"}
    assert workers == {0, 1}


def test_metrics_add_up_over_the_workers(supervised):
    _, ports, metrics = supervised

    def total() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("aigc_requests_total{") and 'method="Chat"' in line
        )

    before = total()
    for port in ports:
        ask(f"127.0.0.1:{port}")
    assert total() == before + 2


def test_a_dead_worker_is_replaced(supervised):
    server, ports, _ = supervised
    started = [line for line in lines(server) if line["message"] == "worker started" and line["worker"] == 1]
    pid = started[-1]["pid"]
    import os

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        restarted = [
            line for line in lines(server) if line["message"] == "worker started" and line["worker"] == 1
        ]
        if len(restarted) > len(started) and serving(f"127.0.0.1:{ports[1]}"):
            break
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.2)
    assert ask(f"127.0.0.1:{ports[1]}").usage.completion_tokens > 0


def test_sigterm_stops_every_worker_and_the_model():
    ports = [free_port(), free_port()]
    server = ServerProcess(
        {"AIGC_WORKERS": "2", "AIGC_WORKER_PORTS": ",".join(map(str, ports)), "AIGC_PRESETS": "none"}
    )
    try:
        deadline = time.monotonic() + 90
        while not all(serving(f"127.0.0.1:{p}") for p in ports):
            assert server.alive() and time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        assert server.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        server.stop()
    stopped = [line for line in lines(server) if line["message"] == "stopped"]
    assert sorted(str(line.get("worker")) for line in stopped) == ["0", "1", "None"]
    assert not any(serving(f"127.0.0.1:{p}") for p in ports)


# --- the workers' environment, in every branch of the supervisor (issue 13 point 3) -----------

QUOTA_CONFIG = """
default_model = "vendor-model"
[upstreams.openai]
base_url = "http://127.0.0.1:9/v1"

[[models]]
id = "vendor-model"
upstream = "openai"
upstream_model = "gpt-4o-mini"

[[keys]]
name = "limited"
sha256 = "{digest}"
requests_per_minute = 60
"""


def worker_environ(server: ServerProcess, workers: int = 2, timeout: float = 90) -> list[dict[str, str]]:
    """Each worker's environment, read from /proc once every worker has started."""
    deadline = time.monotonic() + timeout
    while True:
        started = {
            line["worker"]: line["pid"] for line in lines(server) if line["message"] == "worker started"
        }
        if len(started) == workers:
            break
        assert server.alive() and time.monotonic() < deadline, server.output()
        time.sleep(0.1)
    environs = []
    for index in range(workers):
        raw = pathlib.Path(f"/proc/{started[index]}/environ").read_bytes()
        environs.append(dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item))
    return environs


@pytest.mark.parametrize(
    "branch",
    ["local model started by the supervisor", "AIGC_LOCAL_ENABLED=false", "AIGC_LOCAL_URL set"],
)
def test_every_worker_shares_the_quota_store_in_every_branch(branch, tmp_path):
    from server.access.keys import digest_of, new_key

    config = tmp_path / "aigc.toml"
    config.write_text(QUOTA_CONFIG.format(digest=digest_of(new_key()).hex()))
    env = {
        "AIGC_WORKERS": "2",
        "AIGC_WORKER_PORTS": f"{free_port()},{free_port()}",
        "AIGC_PRESETS": "none",
        "AIGC_CONFIG": str(config),
        "AIGC_DATA_DIR": str(tmp_path / "data"),
    }
    if branch == "AIGC_LOCAL_ENABLED=false":
        env["AIGC_LOCAL_ENABLED"] = "false"
    elif branch == "AIGC_LOCAL_URL set":
        env["AIGC_LOCAL_URL"], env["AIGC_LOCAL_KEY"] = "http://127.0.0.1:9", "k"
    server = ServerProcess(env)
    try:
        environs = worker_environ(server)
    finally:
        server.stop()
    urls = {e.get("AIGC_REDIS_URL") for e in environs}
    assert len(urls) == 1 and None not in urls, f"{branch}: workers' quota stores: {urls}"
    assert next(iter(urls)).startswith("unix://")
    supervisor = {e.get("AIGC_SUPERVISOR_PID") for e in environs}
    assert supervisor == {str(server.proc.pid)}
    if branch == "local model started by the supervisor":
        assert all(e.get("AIGC_LOCAL_URL", "").startswith("http://127.0.0.1:") for e in environs)
        assert len({e["AIGC_LOCAL_SLOTS_DIR"] for e in environs}) == 1
    elif branch == "AIGC_LOCAL_URL set":
        assert {e["AIGC_LOCAL_URL"] for e in environs} == {"http://127.0.0.1:9"}


# --- one queue for the one model, whatever the worker count (issue 13 point 5) ----------------


def test_the_local_models_slots_are_one_pool_over_the_workers():
    """2 workers, 2 llama.cpp slots: one worker may use both (it was given half), and
    a third stream - on the other worker - is refused while both are busy."""
    ports = [free_port(), free_port()]
    server = ServerProcess(
        {
            "AIGC_WORKERS": "2",
            "AIGC_WORKER_PORTS": ",".join(map(str, ports)),
            "AIGC_PRESETS": "none",
            "AIGC_LOCAL_PARALLEL": "2",
            "AIGC_LOCAL_QUEUE_TIMEOUT_SECONDS": "0.5",
        }
    )
    # Greedy decoding to the 1000-token limit: each slot stays busy for the whole test.
    long = pb.ChatRequest(
        messages=[
            content_pb2.Message(role=content_pb2.ROLE_USER, content="Write a long story about the sea.")
        ],
        generation_config=generation_pb2.GenerationConfig(max_output_tokens=1000, temperature=0),
    )
    channels = [grpc.insecure_channel(f"127.0.0.1:{p}") for p in ports]
    try:
        deadline = time.monotonic() + 90
        while not all(serving(f"127.0.0.1:{p}") for p in ports):
            assert server.alive() and time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        stubs = [aigc_service_pb2_grpc.AigcServiceStub(c) for c in channels]
        holders = [stubs[0].StreamChat(long, timeout=60) for _ in range(2)]
        for holder in holders:
            next(holder)  # both decoding, both through worker 0
        with pytest.raises(grpc.RpcError) as caught:
            next(stubs[1].StreamChat(long, timeout=30))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "slots are all busy" in caught.value.details()
        for holder in holders:
            holder.cancel()
    finally:
        for channel in channels:
            channel.close()
        server.stop()


# --- kill -9 of the supervisor leaves nothing behind; pid 1 is a supervisor too (point 16) ------


def _children(pid: int) -> list[int]:
    found = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _running(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _argv(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_kill_9_of_the_supervisor_leaves_no_redis_worker_or_temp_folder(tmp_path):
    from server.access.keys import digest_of, new_key

    config = tmp_path / "aigc.toml"
    config.write_text(QUOTA_CONFIG.format(digest=digest_of(new_key()).hex()))
    ports = [free_port(), free_port()]
    server = ServerProcess(
        {
            "AIGC_WORKERS": "2",
            "AIGC_WORKER_PORTS": ",".join(map(str, ports)),
            "AIGC_PRESETS": "none",
            "AIGC_CONFIG": str(config),
            "AIGC_LOCAL_ENABLED": "false",
            "AIGC_SHUTDOWN_GRACE_SECONDS": "1",
            "AIGC_DATA_DIR": str(tmp_path / "data"),
        }
    )
    try:
        environs = worker_environ(server)
        folder = pathlib.Path(environs[0]["PROMETHEUS_MULTIPROC_DIR"])
        deadline = time.monotonic() + 60
        while not all(serving(f"127.0.0.1:{p}") for p in ports):
            assert server.alive() and time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        children = _children(server.proc.pid)
        redis = [pid for pid in children if "redis-server" in _argv(pid)]
        workers = [pid for pid in children if "-m server" in _argv(pid) and "janitor" not in _argv(pid)]
        assert len(redis) == 1 and len(workers) == 2 and folder.is_dir()
        server.proc.kill()  # SIGKILL: the supervisor cannot clean up itself
        server.proc.wait()
        deadline = time.monotonic() + 40
        while any(_running(pid) for pid in redis + workers) or folder.exists():
            left = [_argv(pid) for pid in redis + workers if _running(pid)]
            assert time.monotonic() < deadline, f"left behind: {left}, folder {folder.exists()}"
            time.sleep(0.2)
    finally:
        server.stop()


def test_a_supervisor_that_is_pid_1_keeps_its_workers(tmp_path):
    """In a container the supervisor is pid 1: a worker's parent is then pid 1 while the
    supervisor lives, and must not be taken for a dead supervisor (`unshare -fp`)."""
    import shutil
    import subprocess
    import sys

    from tests.support.processes import Process, python_env

    if not shutil.which("unshare") or subprocess.run(["unshare", "-fp", "true"]).returncode != 0:
        pytest.skip("needs unshare -fp (root)")
    ports = [free_port(), free_port()]
    env = python_env(
        {
            "AIGC_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
            "AIGC_WORKERS": "2",
            "AIGC_WORKER_PORTS": ",".join(map(str, ports)),
            "AIGC_PRESETS": "none",
            "AIGC_METRICS_ADDRESS": "off",
            "AIGC_DATA_DIR": str(tmp_path / "data"),
        }
    )
    server = Process("pid1", ["unshare", "-fp", sys.executable, "-m", "server"], env)
    try:
        deadline = time.monotonic() + 60
        while not all(serving(f"127.0.0.1:{p}") for p in ports):
            assert server.alive() and time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        assert ask(f"127.0.0.1:{ports[1]}").usage.completion_tokens > 0
        supervisor = _children(server.proc.pid)[0]
        assert "-m server" in _argv(supervisor)
        exited = [line for line in server.output().splitlines() if "worker exited" in line]
        assert not exited, exited
        os.kill(supervisor, signal.SIGTERM)
        assert server.proc.wait(60) == 0, server.output()
    finally:
        server.stop()
