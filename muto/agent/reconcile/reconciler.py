"""The reconcile pass: intake -> observe -> plan -> act, until the plan gives a verdict.

Invariants: single flight (one pass at a time per agent, and only the pass acts on the
runtime or journals a step); each round re-observes, so every decision sees the outcome
of the step before it; the artifacts of the known good releases, of the desired one and
of the one in flight are pinned before each round. A section of a pass that only waits
on the network (the fetch, a FetchArtifacts download) may be pre-empted by the agent's
watcher (`preempt`) when the running release needs the pass now: it journals nothing
half-way, so cutting it short leaves the journal as it was, and the pass looks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from muto.agent.artifacts import ArtifactSource
from muto.agent.clock import Clock
from muto.agent.journal import Journal
from muto.agent.journal.state import JournalState
from muto.agent.reconcile.executor import Executor
from muto.agent.reconcile.gather import PassMemory
from muto.agent.reconcile.intake import Intake
from muto.agent.reconcile.liveness import Degradation, Liveness
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import drifted, plan, restore_lost
from muto.agent.reconcile.settle import settle
from muto.agent.reconcile.steps import FetchArtifacts, PassVerdict, Step
from muto.agent.runtime.base import RuntimeAdapter, RuntimeStatus
from muto.agent.safety import VehicleStateProvider, with_free_disk
from muto.agent.signals import Signals
from muto.domain.gates import SafetyFloor
from muto.domain.messages import AgentPhase
from muto.domain.release import ArtifactType

logger = logging.getLogger("muto.agent")
MAX_ROUNDS = 32  # a pass needs a handful; more means a planner bug, not a busy vehicle
T = TypeVar("T")


class Preempted:
    """What a pre-empted section returns instead of its result."""


PREEMPTED = Preempted()


@dataclass
class Reconciler:
    journal: Journal
    intake: Intake
    executor: Executor
    runtime: RuntimeAdapter
    artifacts: ArtifactSource
    vehicle: VehicleStateProvider
    clock: Clock
    data_dir: Path | None = None  # where free disk is measured when the state omits it
    self_fetched: frozenset[ArtifactType] = frozenset()
    floor: SafetyFloor = field(default_factory=SafetyFloor)  # the vehicle's own
    signals: Signals = field(default_factory=Signals)
    verdict: PassVerdict | None = None  # the last pass's
    reached_cloud: bool = False  # whether the last pass's fetch got an answer
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    liveness: Liveness = field(default_factory=Liveness)  # when a stack is down for good
    # How long the running release's ROS graph has been degraded: fed every status read
    # (each round, each drift check, during a pass too), so its grace runs out on time.
    degradation: Degradation = field(default_factory=Degradation)
    # The running release this pass or the last could not restore for want of its
    # artifacts: the next poll tries again, not every drift check (each try journals
    # its failure), and the watcher does not pre-empt the desired release's download.
    lost: str | None = None
    _section: asyncio.Task[Any] | None = field(default=None, init=False, repr=False)

    async def run_pass(self, fetch: bool = True) -> PassVerdict:
        async with self.lock:
            try:
                if fetch:
                    trusted = self.vehicle.read().clock_trusted
                    missed = await self._preemptible(self.intake.run(trusted))
                    if isinstance(missed, Preempted):
                        self.signals.trigger("fetch pre-empted")  # ask again right after
                    else:
                        self.reached_cloud = missed is None or missed.why != "unreachable"
                self.verdict = await self._rounds(PassMemory())
                return self.verdict
            finally:
                self.signals.set_phase(AgentPhase.IDLE)

    async def _rounds(self, memory: PassMemory) -> PassVerdict:
        for _ in range(MAX_ROUNDS):
            self._pin()
            observed = self.observe(memory)
            self.lost = observed.journal.running_key if restore_lost(observed) else None
            decided = plan(self.journal.state.desired, observed, self.clock.now())
            if not await self._act(decided.steps, memory):
                continue  # pre-empted: look again before anything else is decided
            if decided.verdict is not None:
                return decided.verdict
        logger.error("reconcile did not settle in %d rounds", MAX_ROUNDS)
        return PassVerdict("settled")

    async def _act(self, steps: Sequence[Step], memory: PassMemory) -> bool:
        """Run `steps`; False when one was pre-empted (the rest are not run)."""
        for step in steps:
            if isinstance(step, FetchArtifacts):  # only waits on the network
                done = await self._preemptible(self.executor.run(step, memory))
                if isinstance(done, Preempted):
                    return False
            else:
                await self.executor.run(step, memory)
        return True

    async def _preemptible(self, work: Coroutine[Any, Any, T]) -> T | Preempted:
        """Run `work` so that `preempt` can cut it short. A cancelled pass (a stop)
        cancels it too, and waits for it to unwind."""
        task = asyncio.ensure_future(work)
        self._section = task
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            await settle(task)
            raise
        finally:
            self._section = None
        if task.cancelled():
            return PREEMPTED
        return task.result()

    def preempt(self) -> bool:
        """Cut short the section of the pass in progress that only waits on the network
        (the fetch, a download), so the pass looks again at once: the watcher calls it when
        the running release needs the pass now (a crash loop, a stack not running). Such a
        section journals nothing half-way: a download keeps its partial and resumes, a
        fetch is asked again. True if there was one to cut."""
        section = self._section
        if section is None or section.done():
            return False
        logger.info("pre-empting the pass's wait on the network: the running release needs it")
        section.cancel()
        return True

    def observe(self, memory: PassMemory | None = None) -> Observed:
        state = self.journal.state
        digests = {a.digest for r in state.releases.values() for a in r.artifacts}
        status = self.runtime.status()
        return Observed(
            journal=state,
            runtime=status,
            vehicle=with_free_disk(self.vehicle.read(), self.data_dir),
            cached=self.artifacts.present(digests),
            self_fetched=self.self_fetched,
            download_failures=dict(memory.download_failures) if memory else {},
            stack_down=self._down(state, status),
            degraded_s=self._degraded_s(state, status),
            floor=self.floor,
        )

    def drifted(self) -> bool:
        """The runtime no longer matches what the journal says runs, or the running
        release crash-loops, is down, or its ROS graph stayed degraded past its grace: a
        pass is needed now. Checked between passes and
        during one (the watcher then pre-empts a wait on the network); never while a step
        that changes what runs is in flight (the runtime is expected to be in motion)."""
        state = self.journal.state
        status = self.runtime.status()
        degraded_s = self._degraded_s(state, status)  # the timer ticks here too
        if state.in_flight is not None:
            return False
        if not drifted(state, status, self._down(state, status), degraded_s):
            return False
        return self.lost is None or self.lost != state.running_key

    def _down(self, state: JournalState, status: RuntimeStatus) -> bool:
        down = self.liveness.down(status, self.clock.monotonic())
        return down and status.release == state.running_key

    def _degraded_s(self, state: JournalState, status: RuntimeStatus) -> float | None:
        degraded_s = self.degradation.degraded_for(status, self.clock.monotonic())
        return degraded_s if status.release == state.running_key else None

    def _pin(self) -> None:
        releases = self.journal.state.releases.values()
        self.artifacts.pin({a.digest for r in releases for a in r.artifacts})
