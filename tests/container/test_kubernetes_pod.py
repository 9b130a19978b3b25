"""deploy/kubernetes's server pod, run on the real engine the way a kubelet would run it.

No cluster here. What a cluster would add to tests/deploy's static checks is
whether the pod's containers, with the rendered args, env, mounts and user,
work together: so the single-node overlay is rendered with kubectl kustomize
and its aigc-server pod is started as two containers sharing one network
namespace (a pod), the ConfigMap mounted read-only, the Secret's AIGC_API_KEYS
set, uid 10001 without capabilities, Redis at its Service name. Then the
probes' checks and a caller's calls.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.container.engine import Engine, say
from tests.support.processes import ROOT, VENV_BIN

NETWORK = "aigc-k8s-pod"


def rendered() -> list[dict]:
    out = subprocess.run(
        [str(VENV_BIN / "kubectl"), "kustomize", str(ROOT / "deploy/kubernetes/overlays/single-node")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    return doc


def docker_args(spec: dict, c: dict, secret_env: dict[str, str]) -> list[str]:
    """`docker run` options for container `c` of pod `spec`: user, capabilities, env."""
    security = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
    args = ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
    if "ALL" in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", "ALL"]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for e in c.get("env", []):
        if "value" in e:
            args += ["--env", f"{e['name']}={e['value']}"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            args += ["--env", f"{e['name']}={secret_env[ref['key']]}"]
    return args


@pytest.fixture(scope="module")
def pod(engine: Engine, image: str, tmp_path_factory) -> Iterator[dict]:
    docs = rendered()
    server = find(docs, "Deployment", "aigc-server")
    spec = server["spec"]["template"]["spec"]
    app, envoy = spec["containers"]
    config = find(docs, "ConfigMap", "aigc-config")
    redis = find(docs, "Deployment", "aigc-redis")["spec"]["template"]["spec"]["containers"][0]
    key = "aigc-" + secrets.token_urlsafe(32)
    secret_env = {"AIGC_API_KEYS": f"ci:{hashlib.sha256(key.encode()).hexdigest()}"}
    config_dir = tmp_path_factory.mktemp("configmap")
    for name, text in config["data"].items():
        (config_dir / name).write_text(text)
        (config_dir / name).chmod(0o644)
    config_dir.chmod(0o755)
    (config_mount,) = [m for m in app["volumeMounts"] if m["name"] == "config"]
    names = {"redis": "aigc-k8s-redis", "server": "aigc-k8s-server", "envoy": "aigc-k8s-envoy"}
    cleanup = [*names.values()]
    engine.docker("rm", "--force", *cleanup, check=False)
    engine.docker("network", "rm", NETWORK, check=False)
    engine.docker("network", "create", NETWORK)
    try:
        say("overlays/single-node, rendered: its aigc-server pod (server + Envoy sidecar) and Redis")
        engine.docker("run", "--detach", "--name", names["redis"], "--network", NETWORK,
                      "--network-alias", "aigc-redis", redis["image"], *redis["args"])  # fmt: skip
        engine.docker(
            "run", "--detach", "--name", names["server"], "--network", NETWORK,
            *docker_args(spec, app, secret_env),
            "--volume", f"{config_dir}:{config_mount['mountPath']}:ro", "--tmpfs", "/data:uid=10001",
            app["image"], *app["args"],
        )  # fmt: skip
        shared = f"container:{names['server']}"  # one network namespace: the pod's
        engine.docker("run", "--detach", "--name", names["envoy"], "--network", shared,
                      *docker_args(spec, envoy, secret_env), envoy["image"], *envoy["args"])  # fmt: skip
        inspect = json.loads(engine.docker("inspect", names["server"]).stdout)[0]
        ip = inspect["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        yield {
            "ip": ip,
            "key": key,
            "spec": spec,
            "app": app,
            "envoy": envoy,
            "names": names,
            "engine": engine,
        }
    finally:
        engine.docker("rm", "--force", *cleanup, check=False)
        engine.docker("network", "rm", NETWORK, check=False)


def health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3).status


def wait_for(check, what: str, attempts: int = 120) -> None:
    for _ in range(attempts):
        try:
            if check():
                return
        except (grpc.RpcError, httpx.HTTPError, subprocess.CalledProcessError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} never became true")


def test_the_probes_pass(pod):
    """kubelet's gRPC probes hit the pod IP at the server's port; Envoy's is an exec."""
    app = pod["app"]
    port = app["readinessProbe"]["grpc"]["port"]
    address = f"{pod['ip']}:{port}"
    service = app["readinessProbe"]["grpc"]["service"]
    logs = lambda: pod["engine"].docker("logs", pod["names"]["server"], check=False).stderr[-3000:]  # noqa: E731
    try:
        wait_for(lambda: health(address, service) == health_pb2.HealthCheckResponse.SERVING, "readiness")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    assert health(address, "") == health_pb2.HealthCheckResponse.SERVING  # startup and liveness
    command = pod["envoy"]["readinessProbe"]["exec"]["command"]
    wait_for(
        lambda: pod["engine"].docker("exec", pod["names"]["envoy"], *command, check=False).returncode == 0,
        "Envoy's readiness",
    )
    say(f"pod {pod['ip']}: gRPC health {service!r} and '' SERVING on :{port}; Envoy's exec probe passes")


def test_calls_through_the_sidecar_need_the_secrets_key(pod):
    port = pod["envoy"]["ports"][0]["containerPort"]
    url = f"http://{pod['ip']}:{port}/v1/chat:generate"
    body = {
        "messages": [{"role": "ROLE_USER", "content": "Hi."}],
        "generation_config": {"max_output_tokens": 4},
    }
    keyless = httpx.post(url, json=body, timeout=60)
    keyed = httpx.post(url, json=body, headers={"authorization": f"Bearer {pod['key']}"}, timeout=60)
    say(f"POST {url}: without a key {keyless.status_code}, with the Secret's key {keyed.status_code}")
    assert keyless.status_code == 401
    assert keyed.status_code == 200, keyed.text


def test_the_server_ends_cleanly_within_the_grace_period(pod):
    engine, names = pod["engine"], pod["names"]
    grace = pod["spec"]["terminationGracePeriodSeconds"]  # covers the drain: tests/deploy
    engine.docker("stop", "--time", str(grace), names["server"], timeout=grace + 30)
    state = json.loads(engine.docker("inspect", names["server"]).stdout)[0]["State"]
    say(f"docker stop --time {grace}: exit code {state['ExitCode']}, OOM-killed {state['OOMKilled']}")
    assert state["ExitCode"] == 0
