"""Process groups: every child the runtimes start leads its own group, so that stopping
it reaches its whole tree (a shell and what it spawned, `ros2 launch` and its nodes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from asyncio.subprocess import Process
from pathlib import Path

from muto.agent.runtime.procfs import parse_stat

_PROC = Path("/proc")
KILL_WAIT_SEC = 5.0


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to a group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process remains in the group. Orphans whose reaper
    never reaps (a container's PID 1 often does not) stay as zombies: they are dead."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not _PROC.is_dir():
        return True
    return any(e.name.isdigit() and _live_member(e, pgid) for e in _PROC.iterdir())


def _live_member(entry: Path, pgid: int) -> bool:
    try:
        stat = (entry / "stat").read_text()
    except OSError:
        return False
    member = parse_stat(int(entry.name), stat)
    return member is not None and member.pgid == pgid and member.alive


async def terminate_group(proc: Process, grace_sec: float, poll_sec: float = 0.02) -> None:
    """SIGTERM the process's group, wait up to `grace_sec` for all of it, then SIGKILL.
    Returns once the leader is reaped and no member of the group is alive."""
    pgid = proc.pid
    deadline = time.monotonic() + grace_sec
    signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace_sec):  # not wait_for: it can lose a cancel
            await proc.wait()
    while group_alive(pgid) and time.monotonic() < deadline:
        await asyncio.sleep(poll_sec)
    signal_group(pgid, signal.SIGKILL)
    await proc.wait()
    # SIGKILL is delivered asynchronously: wait until the rest of the group is gone too.
    for _ in range(int(KILL_WAIT_SEC / poll_sec)):
        if not group_alive(pgid):
            break
        await asyncio.sleep(poll_sec)
