"""`make fuzz`: schemathesis against the served spec, through Envoy, in front of the real server.

Starts the whole stack as `make run` does (tests/support/stack.py: the gRPC
server with the built-in local model, no vendor presets, Envoy in front) on
free ports, runs `schemathesis run http://.../openapi.json` with
tests/fuzz/schemathesis.toml and the checks of tests/fuzz/hooks.py, then
reads Envoy's JSON access log of the run as a second, independent count:
every request schemathesis sent, by status, and none 5xx.

    python tests/fuzz/run_fuzz.py [schemathesis run options, e.g. --max-time=60 --seed=7]

Exit code: non-zero if schemathesis reported a failure or Envoy logged a 5xx.
The schemathesis reports (JUnit, NDJSON events) are written to build/fuzz/.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from tests.fuzz.env import fuzz_env  # noqa: E402 - after the path set-up above
from tests.support.stack import running_stack  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REPORTS = ROOT / "build" / "fuzz"
#: 5xx the run may see without failing, with the reason. None: with no vendor
#: presets there is no upstream to be unreachable, so any 5xx is a defect.
ALLOWED_5XX: dict[int, str] = {}


def envoy_access_lines(output: str) -> list[dict]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{") and '"protocol"' in line and '"logger"' not in line:
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def server_access_lines(output: str) -> list[dict]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{") and '"aigc.access"' in line:
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def _show(title: str, counts: collections.Counter, top: int = 15) -> None:
    print(f"fuzz: {title}")
    for what, count in counts.most_common(top):
        print(f"fuzz:   {count:6d}  {what}")


def summarize(output: str) -> list[dict]:
    """Print what the stack's logs say about the run; return Envoy's 5xx lines."""
    lines = envoy_access_lines(output)
    statuses = collections.Counter(int(line["status"]) for line in lines if line.get("status") is not None)
    print(f"\nfuzz: Envoy logged {len(lines)} requests; by status: {dict(sorted(statuses.items()))}")
    _show(
        "by route:",
        collections.Counter(f"{x.get('method')} {(x.get('path') or '').split('?')[0]}" for x in lines),
    )
    # Who answered what: Envoy itself (transcoder, routes, limits) or the server.
    _show(
        "Envoy's status and RESPONSE_CODE_DETAILS:",
        collections.Counter(f"{x['status']} {x['details']}" for x in lines),
    )
    server = server_access_lines(output)
    _show(
        "the server's answers (code, ErrorInfo reason):",
        collections.Counter(
            f"{x.get('method')} {x.get('code')} {x.get('error_reason') or ''}".strip() for x in server
        ),
    )
    return [x for x in lines if int(x.get("status") or 0) >= 500 and x["status"] not in ALLOWED_5XX]


def main(argv: list[str]) -> int:
    REPORTS.mkdir(parents=True, exist_ok=True)
    schemathesis = pathlib.Path(sys.executable).parent / "schemathesis"
    started = time.monotonic()
    with running_stack(fuzz_env()) as stack:
        print(f"fuzz: stack up in {time.monotonic() - started:.1f} s at {stack.http}", flush=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen" / "python")]),
            "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
            # Hypothesis' own files under build/, not ./.hypothesis.
            "HYPOTHESIS_STORAGE_DIRECTORY": str(REPORTS / "hypothesis"),
        }
        command = [
            str(schemathesis),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{stack.http}/openapi.json",
            "--report=junit,ndjson",
            f"--report-dir={REPORTS}",
            *argv,
        ]
        result = subprocess.run(command, cwd=ROOT, env=env, check=False)
        time.sleep(1.5)  # Envoy writes its access log every second
        output = stack.output()
        server_alive = stack.alive()
    bad = summarize(output)
    if not server_alive:
        print("fuzz: the stack died during the run", file=sys.stderr)
    if bad:
        print("fuzz: server log tail:\n" + output[-4000:], file=sys.stderr)
    failed = result.returncode != 0 or bool(bad) or not server_alive
    verdict = "FAILED" if failed else "passed"
    print(f"fuzz: {verdict} in {time.monotonic() - started:.0f} s (reports in {REPORTS})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
