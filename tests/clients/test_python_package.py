"""The client's wheel (`pip wheel ./clients/python`) installed into a fresh venv,
then used against the real server."""

from __future__ import annotations

import json
import pathlib
import zipfile

from tests.clients.conftest import ClientVenv
from tests.support.processes import ROOT, ServerProcess

USAGE = pathlib.Path(__file__).with_name("package_usage.py")


def test_the_wheel_is_self_contained(client_venv: ClientVenv):
    # Everything it needs inside: the generated package and the client, nothing else.
    with zipfile.ZipFile(client_venv.wheel) as wheel:
        tops = {name.split("/")[0] for name in wheel.namelist()}
        names = set(wheel.namelist())
    assert tops == {"aigc", "aigc_client", "aigc_client-0.1.0.dist-info"}, tops
    for generated in sorted((ROOT / "gen" / "python" / "aigc" / "v1").glob("*.py*")):
        assert f"aigc/v1/{generated.name}" in names


def test_the_wheel_carries_the_generated_stubs_and_the_client(client_venv: ClientVenv):
    listing = client_venv.run(client_venv.python, "-m", "pip", "show", "--files", "aigc-client")
    assert listing.returncode == 0, listing.stderr
    files = listing.stdout
    for name in (
        "aigc/v1/aigc_service_pb2.py",
        "aigc/v1/aigc_service_pb2_grpc.py",
        "aigc/v1/content_pb2.pyi",
    ):
        assert name in files
    assert "aigc_client/cli.py" in files and "aigc_client/py.typed" in files
    # Byte for byte what buf generated: the stubs are included, never copied by hand.
    site = pathlib.Path(
        client_venv.run(
            client_venv.python,
            "-c",
            "import aigc_client, os; print(os.path.dirname(aigc_client.__path__[0]))",
        ).stdout.strip()
    )
    for generated in sorted((ROOT / "gen" / "python" / "aigc" / "v1").iterdir()):
        assert (site / "aigc" / "v1" / generated.name).read_bytes() == generated.read_bytes()


def test_streaming_a_deadline_and_error_info_from_the_installed_package(
    client_venv: ClientVenv, server: ServerProcess
):
    run = client_venv.run(client_venv.python, USAGE, server.address)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)

    assert report["stubs_file"].startswith(str(client_venv.path)), "imported the venv's stubs, not the repo's"
    assert "smollm2" in report["models"]

    stream = report["stream"]
    assert len(stream["deltas"]) >= 3 and "".join(stream["deltas"]) == stream["text"]
    assert stream["finish_reason"] in ("FINISH_REASON_STOP", "FINISH_REASON_MAX_TOKENS")
    assert stream["completion_tokens"] > 0
    assert stream["text"] == report["unary_text"], "the folded stream is the unary answer"

    embed = report["embed"]
    assert (embed["model"], embed["dimensions"]) == ("all-minilm-l6-v2", [384, 384, 384])
    paraphrase, unrelated = embed["similarities"]
    assert paraphrase > unrelated and embed["prompt_tokens"] > 0

    deadline = report["deadline"]
    assert deadline["code"] == "DEADLINE_EXCEEDED"
    assert deadline["reason"] in ("UPSTREAM_TIMEOUT", "")  # "" if the client's own timer fired first
    assert deadline["seconds"] < 5

    error = report["error"]
    assert (error["code"], error["reason"], error["domain"]) == (
        "NOT_FOUND",
        "MODEL_NOT_FOUND",
        "aigc-service",
    )
    assert error["request_id"]
    assert error["text"].startswith("NOT_FOUND MODEL_NOT_FOUND: model 'no-such-model'")

    raw = report["raw_error"]
    assert (raw["code"], raw["reason"]) == ("INVALID_ARGUMENT", "CAPABILITY_NOT_SUPPORTED")
    assert raw["capability"] == "CAPABILITY_VISION" and raw["model"] == "smollm2"
