"""What /proc says of a process: memory (VmRSS, VmHWM) and CPU time over its threads."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


def status_kb(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """VmHWM := VmRSS from now on."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass(frozen=True)
class Cpu:
    """CPU a process used so far: nanoseconds over its live threads, and stat ticks."""

    at: float
    ns: int
    ticks: int
    threads: frozenset[int]


def cpu_of(pid: int) -> Cpu:
    tasks = Path(f"/proc/{pid}/task")
    ns, threads = 0, set()
    for task in tasks.iterdir():
        ns += int((task / "schedstat").read_text().split()[0])
        threads.add(int(task.name))
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return Cpu(time.monotonic(), ns, ticks, frozenset(threads))


def cpu_share(before: Cpu, after: Cpu) -> float:
    """Share of one core between two samples; refuses when a thread came or went (its
    time would be missing from the per-thread sum)."""
    if before.threads != after.threads:
        raise RuntimeError(f"threads changed during the window: {before.threads} {after.threads}")
    return (after.ns - before.ns) / 1e9 / (after.at - before.at)


def tick_share(before: Cpu, after: Cpu) -> float:
    return (after.ticks - before.ticks) / os.sysconf("SC_CLK_TCK") / (after.at - before.at)
