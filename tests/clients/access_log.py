"""Reading the server's access log (JSON lines of logger `aigc.access`) in tests."""

from __future__ import annotations

import json
import time

from tests.support.processes import ServerProcess


def access_lines(server: ServerProcess, method: str | None = None) -> list[dict]:
    """Every access line so far, oldest first; only `method`'s when given."""
    lines = []
    for raw in server.output().splitlines():
        if '"aigc.access"' not in raw:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("logger") == "aigc.access" and (method is None or line.get("method") == method):
            lines.append(line)
    return lines


def wait_for_lines(server: ServerProcess, method: str, count: int, timeout: float = 15) -> list[dict]:
    """Waits until there are at least `count` access lines of `method`; returns them all."""
    deadline = time.monotonic() + timeout
    while True:
        lines = access_lines(server, method)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)
