"""Running a short command to completion (readiness probes, venv, pip, podman)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from muto.agent.runtime.process_group import signal_group

OUTPUT_TAIL = 2000


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
) -> CommandResult:
    """Run `argv` in its own process group and collect its output.

    On timeout (TimeoutError) or cancellation the whole group is killed before this
    returns, so no probe or installer outlives its caller. OSError if it cannot start.
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
            out, _ = await proc.communicate()
    except BaseException:
        signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    text = out.decode("utf-8", errors="replace")
    return CommandResult(returncode=proc.returncode or 0, output=text[-OUTPUT_TAIL:])
