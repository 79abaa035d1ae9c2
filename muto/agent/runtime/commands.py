"""Running a short command to completion (readiness probes, venv, pip, podman)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from muto.agent.runtime.process_group import signal_group
from muto.agent.runtime.procfs import group_reads

OUTPUT_TAIL = 2000
T = TypeVar("T")
# Less than this read by a command's group within its stall window is no progress: an
# idle Go program (podman) still reads a few bytes a second of its own.
STALL_BYTES = 4096


class Stalled(TimeoutError):
    """The command's process group read (almost) nothing for its stall window."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    output: str  # stdout and stderr together, the last OUTPUT_TAIL characters

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def run_command(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_sec: float | None = None,
    stall_sec: float | None = None,
) -> CommandResult:
    """Run `argv` in its own process group and collect its output.

    On timeout (TimeoutError), a stall (Stalled: with `stall_sec`, its group read fewer
    than STALL_BYTES for that long; where /proc says) or cancellation the whole group is
    killed before this returns, so no probe, installer or pull outlives its caller.
    OSError if it cannot start.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as
        # the command finishes, and the caller (a runtime's watch, the agent's stop) hangs.
        async with asyncio.timeout(timeout_sec):
            talk = proc.communicate()
            out, _ = await (talk if stall_sec is None else _unless_stalled(proc, talk, stall_sec))
    except BaseException:
        signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    text = out.decode("utf-8", errors="replace")
    return CommandResult(returncode=proc.returncode or 0, output=text[-OUTPUT_TAIL:])


async def _unless_stalled(
    proc: asyncio.subprocess.Process, talk: Awaitable[T], stall_sec: float
) -> T:
    """`talk`'s result, or Stalled once the group read less than STALL_BYTES in
    `stall_sec` (looked at a few times a window)."""
    task = asyncio.ensure_future(talk)
    clock = asyncio.get_running_loop().time
    read, since = group_reads(proc.pid), clock()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(stall_sec / 4, 1.0))
            if done:
                return task.result()
            now = group_reads(proc.pid)
            if now is None or read is None or now < read or now - read >= STALL_BYTES:
                read, since = now, clock()  # progress, or nothing to judge it by
            elif clock() - since >= stall_sec:
                raise Stalled(f"no bytes for {stall_sec:g}s")
    finally:
        task.cancel()
