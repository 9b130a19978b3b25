"""Cleans up after a supervisor that was killed without a chance to (kill -9, OOM killer).

    python -m server.janitor FOLDER GRACE_SECONDS     (started by server/supervisor.py)

The supervisor writes one line per process it starts - `worker PID`,
`redis PID` - to this process's stdin, and `done` when it stopped cleanly
(it then removed everything itself). End of file without `done` means the
supervisor died: its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG,
server/__main__.py) and drain, using the private redis-server for their
quotas meanwhile; so the janitor waits for every worker to exit (at most the
grace period plus a margin), then stops redis-server and removes FOLDER (the
metrics files and redis's socket).

SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group, and
the supervisor's own clean stop tells the janitor when it is done.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

# Time past the workers' grace for their drain to end.
_MARGIN_SECONDS = 15.0


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def main(argv: list[str]) -> int:
    folder, grace = argv[0], float(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    workers: list[int] = []
    redis: list[int] = []
    for line in sys.stdin.buffer:
        role, _, pid = line.decode().strip().partition(" ")
        if role == "done":
            return 0
        if role == "worker":
            workers.append(int(pid))
        elif role == "redis":
            redis.append(int(pid))
    # End of file without "done": the supervisor died.
    deadline = time.monotonic() + grace + _MARGIN_SECONDS
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in redis:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    stop_by = time.monotonic() + 5
    while any(_alive(pid) for pid in redis) and time.monotonic() < stop_by:
        time.sleep(0.05)
    for pid in redis:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)
    print(f"aigc-service janitor: the supervisor died; cleaned up {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
