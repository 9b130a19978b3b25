"""`@aigc/client` as a user gets it: `npm pack` of clients/typescript, installed
into a fresh project outside the repository - offline, from tarballs only (its
three runtime dependencies packed from the repository's node_modules, as they
would come from a registry) - and used against the real server."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import tarfile
from collections.abc import Iterator

import pytest

from tests.support.processes import ROOT, ServerProcess

PACKAGE = ROOT / "clients" / "typescript"
DEPENDENCIES = json.loads((PACKAGE / "package.json").read_text())["dependencies"]

USAGE = """
import { AigcClient, AigcError, ChatFolder, EmbeddingTask, Role, textOf } from "@aigc/client";
import { fileURLToPath } from "node:url";

const client = new AigcClient({ address: process.argv[2] });
const report = { resolved: fileURLToPath(import.meta.resolve("@aigc/client")) };
report.models = (await client.allModels()).map((m) => m.id);
const folder = new ChatFolder();
let deltas = 0;
for await (const message of client.streamChat({
  messages: [{ role: Role.USER, content: "Say hello." }],
  generationConfig: { maxOutputTokens: 8, temperature: 0 },
})) {
  folder.add(message);
  deltas += 1;
}
const answer = folder.response();
report.stream = { deltas, text: textOf(answer), usage: Number(answer.usage?.totalTokens ?? 0) };
// Embeddings from the built-in embedding model: one vector per text, in order.
const embedded = await client.embed({
  inputs: ["The sea is calm.", "The ocean is quiet.", "Taxes are due in April."],
  task: EmbeddingTask.SIMILARITY,
});
const vectors = embedded.embeddings.map((e) => e.values);
const cosine = (a, b) => {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
};
report.embed = {
  model: embedded.model,
  dimensions: vectors.map((v) => v.length),
  similarities: [cosine(vectors[0], vectors[1]), cosine(vectors[0], vectors[2])],
  promptTokens: embedded.usage?.promptTokens ?? 0,
};
try {
  await client.chat({ model: "no-such-model", messages: [{ role: Role.USER, content: "hi" }] });
} catch (error) {
  report.error = error instanceof AigcError
    ? { code: error.codeName, reason: error.reason, requestId: error.requestId }
    : { other: String(error) };
}
client.close();
console.log(JSON.stringify(report));
"""


def npm(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "npm_config_update_notifier": "false"},
    )


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The tarball `npm pack` makes of clients/typescript (its prepack builds it)."""
    out = tmp_path_factory.mktemp("ts-pack")
    result = npm("pack", "--json", "--pack-destination", str(out), cwd=PACKAGE)
    assert result.returncode == 0, result.stderr
    (info,) = json.loads(result.stdout[result.stdout.index("[") :])
    return out / info["filename"]


@pytest.fixture(scope="module")
def app(packed: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """A fresh project with the tarball installed, offline."""
    base = tmp_path_factory.mktemp("ts-app")
    deps = base / "deps"
    deps.mkdir()
    for name in DEPENDENCIES:
        result = npm("pack", "--ignore-scripts", str(ROOT / "node_modules" / name), cwd=deps)
        assert result.returncode == 0, result.stderr
    project = base / "app"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "app", "private": True, "type": "module"}))
    tarballs = [str(p) for p in sorted(deps.glob("*.tgz"))]
    install = npm("install", "--offline", *tarballs, str(packed), cwd=project)
    assert install.returncode == 0, install.stdout + install.stderr
    (project / "use.mjs").write_text(USAGE)
    yield project


def test_the_tarball_is_self_contained(packed: pathlib.Path):
    with tarfile.open(packed) as tar:
        names = {m.name.removeprefix("package/"): m for m in tar.getmembers()}
        assert "dist/index.js" in names and "dist/index.d.ts" in names
        # The generated code rides along, byte for byte what buf generated into gen/ts.
        generated = sorted(p.relative_to(ROOT / "gen" / "ts") for p in (ROOT / "gen" / "ts").rglob("*.*"))
        assert generated
        for path in generated:
            member = tar.extractfile(names[f"gen/{path}"])
            assert member is not None and member.read() == (ROOT / "gen" / "ts" / path).read_bytes(), path
        # No import reaches outside the package (../../../gen/ts did).
        for name, member in names.items():
            if name.startswith("dist/") and name.endswith(".js"):
                text = tar.extractfile(member).read().decode()
                for spec in re.findall(r'from "(\.[^"]*)"', text):
                    assert not spec.startswith("../../"), f"{name} imports {spec}"


def test_the_installed_package_streams_lists_and_reports_errors(app: pathlib.Path, server: ServerProcess):
    run = subprocess.run(
        ["node", "use.mjs", server.address], cwd=app, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["resolved"].startswith(str(app / "node_modules" / "@aigc" / "client")), report["resolved"]
    assert "smollm2" in report["models"]
    assert report["stream"]["deltas"] >= 1 and report["stream"]["text"] and report["stream"]["usage"] > 0
    assert report["error"]["code"] == "NOT_FOUND" and report["error"]["reason"] == "MODEL_NOT_FOUND"
    assert report["error"]["requestId"]
    embed = report["embed"]
    assert (embed["model"], embed["dimensions"]) == ("all-minilm-l6-v2", [384, 384, 384])
    paraphrase, unrelated = embed["similarities"]
    assert paraphrase > unrelated and embed["promptTokens"] > 0
