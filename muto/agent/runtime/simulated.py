"""The `simulated` runtime: for the fleet simulator, where 10,000 agents share a few
processes. No child process, no thread: every behaviour is an asyncio sleep or
arithmetic on a monotonic clock."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.agent.runtime.crash_loop import is_crash_looping
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, HealthModel, StackRelease


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


@dataclass
class SimulatedImages:
    """The in-memory twin of podman's image store (podman_images.PodmanImages), the
    SelfFetcher of a simulated runtime that fetches its `oci_image` artifacts itself. A
    pull takes `pull_sec` (real seconds), then waits for `arrives` if given (a test holds
    it there); a digest in `failing` fails with its code; one in `stalled` gets no bytes
    and fails after `stall_sec`, as a stalled registry does."""

    held: set[str] = field(default_factory=set)
    pull_sec: float = 0.0
    arrives: asyncio.Event | None = None
    failing: dict[str, ReasonCode] = field(default_factory=dict)
    stalled: set[str] = field(default_factory=set)
    stall_sec: float = 0.0
    types: frozenset[ArtifactType] = frozenset({ArtifactType.OCI_IMAGE})
    pulling: str | None = None  # the digest being pulled now
    pulls: list[str] = field(default_factory=list)  # every pull begun, in order
    cut: list[str] = field(default_factory=list)  # every pull cancelled

    async def present(self, artifacts: Collection[Artifact]) -> frozenset[str]:
        return frozenset(a.digest for a in artifacts if a.digest in self.held)

    async def fetch(self, artifact: Artifact) -> bool:
        if artifact.digest in self.held:
            return False
        self.pulling = artifact.digest
        self.pulls.append(artifact.digest)
        try:
            await self._pull(artifact)
        except asyncio.CancelledError:
            self.cut.append(artifact.digest)
            raise
        finally:
            self.pulling = None
        self.held.add(artifact.digest)
        return True

    async def _pull(self, artifact: Artifact) -> None:
        if artifact.digest in self.stalled:
            await asyncio.sleep(self.stall_sec)
            detail = f"podman pull {artifact.ref}: no bytes for {self.stall_sec:g}s"
            raise ReasonError(ReasonCode.ARTIFACT_DOWNLOAD_FAILED, detail)
        await asyncio.sleep(self.pull_sec)
        if self.arrives is not None:
            await self.arrives.wait()
        code = self.failing.get(artifact.digest)
        if code is not None:
            raise ReasonError(code, f"podman pull {artifact.ref}: simulated")


class SimulatedRuntime:
    """Simulates one running release per agent.

    `behaviours` maps `stack@version` to a SimulatedBehaviour (releases not listed
    behave well) or is a function of the release. `time_scale` multiplies every
    duration, the release's health timeouts and windows included, so a simulator can
    run hours of fleet time in minutes. Same invariants as the real runtimes: one
    release at a time, a failed apply leaves the previous one running, re-applying the
    running release is a no-op. With a `fetcher` it fetches its oci_image artifacts
    itself, as podman does, and an apply of a release whose image it does not hold fails
    ARTIFACT_DOWNLOAD_FAILED (podman's own pull, the registry out of reach).
    """

    name: str = "simulated"

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        behaviours: BehaviourTable | None = None,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        fetcher: SimulatedImages | None = None,
    ) -> None:
        self.workdir = workdir  # unused: nothing touches the disk
        self.fetcher = fetcher  # its images, when it fetches them itself (as podman does)
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
        self._check_images(release)
        await asyncio.sleep(behaviour.apply_sec * self.time_scale)
        if behaviour.apply_fails:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: simulated apply failure")
        self._running, self._behaviour, self._started = release, behaviour, self.clock()
        self._halted = False
        self.applied.append(release.key)

    def _check_images(self, release: StackRelease) -> None:
        fetcher = self.fetcher
        if fetcher is None:
            return
        for artifact in release.artifacts:
            if artifact.type in fetcher.types and artifact.digest not in fetcher.held:
                raise ReasonError(
                    ReasonCode.ARTIFACT_DOWNLOAD_FAILED, f"{release.key}: image not pulled"
                )

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
