"""RosGraphWatch: the agent's side of the ROS graph helper (ros_graph_helper.py).

The helper runs as a child process (the agent never imports rclpy: it costs tens of MiB
and native threads) and prints a judgment of the release's `healthModel.ros` a few times a
second; this keeps the latest one. Before readiness it says what is still missing; after
readiness a judgment that finds something missing again is a degradation: counted like a
restart (so the crash-loop rule applies to a graph that keeps falling apart) and reported
by `status()` until the graph is whole again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

import msgspec

from muto.agent.runtime.crash_loop import RestartHistory
from muto.agent.runtime.process_group import signal_group
from muto.domain.release import RosGraphHealth
from muto.domain.wire import encode

HELPER = [sys.executable, "-m", "muto.agent.runtime.ros_graph_helper"]
NO_JUDGMENT = "the ROS graph helper has not judged yet"

logger = logging.getLogger("muto.agent.runtime")


class _Judgment(msgspec.Struct):
    missing: list[str] = []
    error: str | None = None


class RosGraphWatch:
    def __init__(
        self,
        spec: RosGraphHealth,
        env: Mapping[str, str],
        clock: Callable[[], float],
        helper: Sequence[str] = HELPER,
    ) -> None:
        self.spec = spec
        self.helper = list(helper)
        self.env = dict(env)
        self.clock = clock
        self.missing: list[str] | None = None  # None: no judgment yet
        self.error: str | None = None
        self.ready = False  # set by the runtime once readiness passed
        self.degradations = RestartHistory(64)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.helper, encode(self.spec).decode(),
            env=self.env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read(self._proc), name="ros graph helper")

    def why_not_ready(self) -> str | None:
        """None when the graph is as the release declares, else what is missing."""
        if self.error is not None:
            return self.error
        if self.missing is None:
            return NO_JUDGMENT
        return "; ".join(self.missing) if self.missing else None

    def degraded(self) -> str | None:
        """After readiness: what went missing from the graph, None while it is whole."""
        return self.why_not_ready() if self.ready and self.missing else None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                judged = msgspec.json.decode(line, type=_Judgment)
            except msgspec.DecodeError:
                continue
            if judged.error is not None:
                self.error = judged.error
                continue
            if self.ready and judged.missing and not self.missing:
                self.degradations.record(self.clock())
                logger.warning("ROS graph degraded: %s", "; ".join(judged.missing))
            self.missing = judged.missing
        if self.error is None:
            self.error = f"the ROS graph helper exited ({await proc.wait()})"

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()  # the helper exits when its stdin closes
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
