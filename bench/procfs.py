"""What the kernel says about our processes: CPU time, memory, children, cores."""

from __future__ import annotations

import contextlib
import os
import pathlib

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    # Fields after the parenthesised command name, which may itself hold spaces.
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (threads included), in seconds; gone pids count 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def rss_mib(pids: list[int]) -> float:
    """Summed VmRSS of these processes, in MiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def descendants(root: int) -> dict[int, bytes]:
    """Every live descendant of `root`: {pid: argv joined by spaces}."""
    parents: dict[int, int] = {}
    argv: dict[int, bytes] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            argv[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
        except OSError:
            continue
    found: dict[int, bytes] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found.update({pid: argv[pid] for pid in frontier})
    return found


def cpu_list(spec: str) -> set[int]:
    """taskset's syntax, "0", "0,1", "0-3", into a set of core numbers."""
    cores: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return cores


def listen_overflows() -> int:
    """TcpExt ListenOverflows of the whole machine: connections refused a place in a full accept queue."""
    lines = pathlib.Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True)).get("ListenOverflows", 0))
    return 0


def machine_cpu() -> dict[str, float]:
    """CPU seconds of the whole machine since boot, all cores: processes (user + system), the kernel's
    interrupt work (irq + softirq: loopback networking lands there, charged to no process) and steal."""
    fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return {
        "processes": (user + nice + system) / TICKS,
        "irq": (irq + softirq) / TICKS,
        "steal": steal / TICKS,
    }
