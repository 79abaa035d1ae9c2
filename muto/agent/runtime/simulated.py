"""The `simulated` runtime: for the fleet simulator, where 10,000 agents share a few
processes. No child process, no thread: every behaviour is an asyncio sleep or
arithmetic on a monotonic clock."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.agent.runtime.crash_loop import is_crash_looping
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import HealthModel, StackRelease


@dataclass(frozen=True, slots=True)
class SimulatedBehaviour:
    """How a simulated release behaves, in (unscaled) seconds."""

    apply_sec: float = 0.0
    apply_fails: bool = False  # APPLY_FAILED after apply_sec; the previous release keeps running
    ready_after_sec: float | None = 0.0  # None: never ready (READINESS_TIMEOUT)
    # Crashes and restarts this often. A release that is "ready" before the crash-loop
    # rule trips passes wait_ready, as a real one would; status() still reports the loop.
    restart_every_sec: float | None = None


BehaviourTable = Mapping[str, SimulatedBehaviour] | Callable[[StackRelease], SimulatedBehaviour]


class SimulatedRuntime:
    """Simulates one running release per agent.

    `behaviours` maps `stack@version` to a SimulatedBehaviour (releases not listed
    behave well) or is a function of the release. `time_scale` multiplies every
    duration, the release's health timeouts and windows included, so a simulator can
    run hours of fleet time in minutes. Same invariants as the real runtimes: one
    release at a time, a failed apply leaves the previous one running, re-applying the
    running release is a no-op.
    """

    name: str = "simulated"

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        behaviours: BehaviourTable | None = None,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workdir = workdir  # unused: nothing touches the disk
        self.behaviours: BehaviourTable = behaviours or {}
        self.time_scale = time_scale
        self.clock = clock
        self.applied: list[str] = []  # every release key actually applied, in order
        self._running: StackRelease | None = None
        self._behaviour = SimulatedBehaviour()
        self._started = 0.0
        self._halted = False  # stopped outside muto: down until applied again

    def behaviour_of(self, release: StackRelease) -> SimulatedBehaviour:
        if callable(self.behaviours):
            return self.behaviours(release)
        return self.behaviours.get(release.key, SimulatedBehaviour())

    async def apply(self, release: StackRelease, artifacts: Mapping[str, Path]) -> None:
        if self._running == release and not self._halted:
            return
        behaviour = self.behaviour_of(release)
        await asyncio.sleep(behaviour.apply_sec * self.time_scale)
        if behaviour.apply_fails:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: simulated apply failure")
        self._running, self._behaviour, self._started = release, behaviour, self.clock()
        self._halted = False
        self.applied.append(release.key)

    async def stop(self) -> None:
        self._running, self._halted = None, False

    def halt(self) -> None:
        """The running release stops outside muto (an operator's `podman rm`, say): it
        reads as not alive, nothing restarts it, until it is applied again."""
        self._halted = self._running is not None

    def status(self) -> RuntimeStatus:
        if self._running is None:
            return STOPPED
        health = self._running.health_model
        return RuntimeStatus(
            release=self._running.key,
            alive=not self._halted,
            restart_count=self._restarts_before(self.clock()),
            crash_looping=self._crash_looping_at(self.clock(), health),
        )

    async def wait_ready(self, health: HealthModel) -> None:
        if self._running is None:
            raise ReasonError(ReasonCode.READINESS_TIMEOUT, "no release is running")
        now = self.clock()
        deadline = now + health.readiness_timeout_sec * self.time_scale
        ready = None if self._halted else self._behaviour.ready_after_sec
        ready_at = math.inf if ready is None else self._started + ready * self.time_scale
        trips_at = self._crash_loop_trips_at(health)
        first = min(ready_at, trips_at, deadline)
        await asyncio.sleep(max(first - now, 0.0))
        if first == trips_at:
            raise ReasonError(ReasonCode.CRASH_LOOP_DETECTED, f"{self._running.key}: simulated")
        if first == deadline and ready_at > deadline:
            raise ReasonError(ReasonCode.READINESS_TIMEOUT, f"{self._running.key}: simulated")

    def _restarts_before(self, now: float) -> int:
        every = self._behaviour.restart_every_sec
        if every is None or every <= 0:
            return 0
        # The epsilon keeps the Nth restart at exactly started + N * every despite rounding.
        return math.floor((now - self._started) / (every * self.time_scale) + 1e-9)

    def _restart_times(self, now: float, keep: int) -> list[float]:
        every = (self._behaviour.restart_every_sec or 0.0) * self.time_scale
        count = self._restarts_before(now)
        return [self._started + k * every for k in range(max(count - keep, 0) + 1, count + 1)]

    def _crash_looping_at(self, now: float, health: HealthModel) -> bool:
        return is_crash_looping(
            self._restart_times(now, health.crash_loop_restarts),
            restarts=health.crash_loop_restarts,
            window_sec=health.crash_loop_window_sec * self.time_scale,
            now=now,
        )

    def _crash_loop_trips_at(self, health: HealthModel) -> float:
        """When the rule first trips: at the Nth restart, if N restarts fit the window."""
        every = self._behaviour.restart_every_sec
        if every is None or every <= 0:
            return math.inf
        at = self._started + health.crash_loop_restarts * every * self.time_scale
        return at if self._crash_looping_at(at, health) else math.inf
