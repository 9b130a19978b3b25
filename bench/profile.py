"""py-spy on the server under load: a flame graph, and own time by package.

Samples are taken with `--gil --native`: only the thread holding the GIL,
i.e. where Python code (and the C it calls with the GIL held: protobuf,
json, socket syscalls) spends the server's one event-loop core. Without
--gil, py-spy counts threads blocked in epoll/poll/queue waits (gRPC's poller,
the metrics server, the thread pool) as busy, which buries the real profile.
gRPC core's own threads work without the GIL and are not in these samples;
/proc's CPU time per request includes them.
"""

from __future__ import annotations

import collections
import pathlib
import re
import subprocess
import sys

PY_SPY = pathlib.Path(sys.executable).parent / "py-spy"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_STDLIB = set(sys.stdlib_module_names)
# Native code py-spy names by its library or C source, grouped by who owns it.
_NATIVE = {
    "libc.so.6": "libc (syscalls, memcpy, malloc)",
    "_message.abi3.so": "protobuf (upb, native)",
}


def record(pid: int, seconds: float, out: pathlib.Path, fmt: str) -> str:
    """py-spy record for `seconds`; returns py-spy's summary line."""
    args = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100"]
    args += ["--gil", "--native", "--subprocesses", "--format", fmt, "--output", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    # "py-spy> Wrote flamegraph data to '...'. Samples: 753 Errors: 2" -> "Samples: 753 Errors: 2"
    summary = next((line for line in done.stdout.splitlines() if "Samples:" in line), "")
    return summary[summary.find("Samples:") :].strip()


def package(file: str) -> str:
    """The package a frame's file belongs to, as py-spy prints the file (relative to its sys.path entry)."""
    if file in _NATIVE:
        return _NATIVE[file]
    if file.startswith("libpython") or file.endswith((".c", ".h")):
        return "CPython interpreter and C modules"
    if file.startswith("<frozen"):
        return f"stdlib {file.removeprefix('<frozen ').rstrip('>').split('.')[0]}"
    top = file.split("/")[0].removesuffix(".py")
    if top == "server":
        # Ours, by module: the part the hot-path work owns.
        parts = file.removesuffix(".py").split("/")
        return "server." + ".".join(parts[1:3] if parts[1:2] == ["providers"] else parts[1:2])
    if top in _STDLIB:
        return f"stdlib {top}"
    return top.split(".")[0]


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text)
    return (match["func"], match["file"]) if match else (text, text)


def own_time(raw: pathlib.Path, top: int = 15) -> dict:
    """From py-spy's raw (collapsed) output: samples by package of the innermost
    frame (own time), samples with the package anywhere on the stack (inclusive
    time), and the functions with the most own time."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_frame(text) for text in stack.split(";")]
        n = int(count)
        func, file = frames[-1]
        own[package(file)] += n
        functions[f"{func} ({file})"] += n
        # Inclusive time is counted for Python code only: native frames (libc,
        # the interpreter) sit under every stack and would read ~100%.
        for name in {
            package(file) for _, file in frames if file.endswith(".py") or file.startswith("<frozen")
        }:
            inclusive[name] += n
        total += n
    return {
        "samples": total,
        "by_package": [(name, n, inclusive.get(name)) for name, n in own.most_common()],
        "top_functions": functions.most_common(top),
    }
