"""What /proc says about processes: enough to prove that a pid is still the process a
runtime started, and to find what a dead agent left running.

A pid alone names nothing lasting: once a process is reaped its pid is handed out again.
A pid plus its start time (field 22 of /proc/<pid>/stat, clock ticks after boot) plus the
boot id names exactly one process. Where /proc is missing nothing can be proven, so
every lookup answers None and nothing is ever signalled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
BOOT_ID = PROC / "sys/kernel/random/boot_id"


@dataclass(frozen=True, slots=True)
class ProcessEntry:
    pid: int
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, this process and no other
    alive: bool  # a zombie is dead: it only waits for a parent that may never reap it
    marked: bool = False  # its environment carries the mark asked for
    release: str | None = None  # its MUTO_RELEASE, read with the mark


def boot_id() -> str:
    """This boot's id ("" without /proc): start times restart from zero at every boot."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def parse_stat(pid: int, stat: str) -> ProcessEntry | None:
    # "pid (comm) state ppid pgrp ... starttime(22) ...": comm may hold spaces and ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    alive = fields[0] not in ("Z", "X")
    return ProcessEntry(pid, int(fields[1]), int(fields[2]), int(fields[19]), alive)


def read_entry(pid: int, mark: str | None = None) -> ProcessEntry | None:
    """The process now holding `pid`, or None. `mark` ("NAME=value") is looked for in its
    environment. Both files are read through one handle on /proc/<pid>, which stops
    answering once that process is gone: they can never describe two processes."""
    try:
        handle = os.open(PROC / str(pid), os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        entry = parse_stat(pid, _read_at(handle, "stat").decode(errors="replace"))
        if entry is None or mark is None:
            return entry
        try:
            environ = _read_at(handle, "environ").split(b"\0")
        except PermissionError:  # another user's process: not one the runtime started
            return entry
        if mark.encode() not in environ:
            return entry
        release = next((v[13:].decode() for v in environ if v.startswith(b"MUTO_RELEASE=")), None)
        return dataclasses.replace(entry, marked=True, release=release)
    except OSError:
        return None
    finally:
        os.close(handle)


def process_table(mark: str | None = None) -> dict[int, ProcessEntry]:
    """Every process this one can see, by pid (not atomic: each entry is read alone)."""
    try:
        names = [entry.name for entry in PROC.iterdir() if entry.name.isdigit()]
    except OSError:
        return {}
    entries = (read_entry(int(name), mark) for name in names)
    return {e.pid: e for e in entries if e is not None and e.pid != os.getpid()}


def group_reads(pgid: int) -> int | None:
    """Bytes the processes of group `pgid` have read so far (`rchar` of /proc/<pid>/io:
    files and sockets alike), or None where /proc cannot say. A download's progress,
    whoever in the group does it; exited members no longer count."""
    total, seen = 0, False
    for entry in process_table().values():
        if entry.pgid != pgid:
            continue
        try:
            text = (PROC / str(entry.pid) / "io").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("rchar:"):
                total, seen = total + int(line.split()[1]), True
    return total if seen else None


def signal_process(entry: ProcessEntry, sig: signal.Signals) -> bool:
    """Send `sig` to `entry.pid` only if that pid is still the same process (same start
    time). The check and the kill are two system calls; in between, the process would
    have to die, be reaped and its pid be handed out again, which takes a full turn of
    the pid space. True if the signal was sent."""
    now = read_entry(entry.pid)
    if now is None or now.start != entry.start:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(entry.pid, sig)
        return True
    return False


def _read_at(directory: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=directory)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
