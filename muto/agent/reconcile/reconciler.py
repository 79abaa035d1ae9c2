"""The reconcile pass: intake -> observe -> plan -> act, until the plan gives a verdict.

Invariants: single flight (one pass at a time per agent); each round re-observes, so
every decision sees the outcome of the step before it; the artifacts of the known good
releases, of the desired one and of the one in flight are pinned before each round.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from muto.agent.artifacts import ArtifactSource
from muto.agent.clock import Clock
from muto.agent.journal import Journal
from muto.agent.reconcile.executor import Executor
from muto.agent.reconcile.gather import PassMemory
from muto.agent.reconcile.intake import Intake
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import plan
from muto.agent.reconcile.steps import PassVerdict
from muto.agent.runtime.base import RuntimeAdapter
from muto.agent.safety import VehicleStateProvider, with_free_disk
from muto.agent.signals import Signals
from muto.domain.messages import AgentPhase
from muto.domain.release import ArtifactType

logger = logging.getLogger("muto.agent")
MAX_ROUNDS = 32  # a pass needs a handful; more means a planner bug, not a busy vehicle


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
    signals: Signals = field(default_factory=Signals)
    verdict: PassVerdict | None = None  # the last pass's
    reached_cloud: bool = False  # whether the last pass's fetch got an answer
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run_pass(self, fetch: bool = True) -> PassVerdict:
        async with self.lock:
            try:
                if fetch:
                    missed = await self.intake.run(self.vehicle.read().clock_trusted)
                    self.reached_cloud = missed is None or missed.why != "unreachable"
                self.verdict = await self._rounds(PassMemory())
                return self.verdict
            finally:
                self.signals.set_phase(AgentPhase.IDLE)

    async def _rounds(self, memory: PassMemory) -> PassVerdict:
        for _ in range(MAX_ROUNDS):
            self._pin()
            observed = self.observe(memory)
            decided = plan(self.journal.state.desired, observed, self.clock.now())
            for step in decided.steps:
                await self.executor.run(step, memory)
            if decided.verdict is not None:
                return decided.verdict
        logger.error("reconcile did not settle in %d rounds", MAX_ROUNDS)
        return PassVerdict("settled")

    def observe(self, memory: PassMemory | None = None) -> Observed:
        state = self.journal.state
        digests = {a.digest for r in state.releases.values() for a in r.artifacts}
        return Observed(
            journal=state,
            runtime=self.runtime.status(),
            vehicle=with_free_disk(self.vehicle.read(), self.data_dir),
            cached=self.artifacts.present(digests),
            self_fetched=self.self_fetched,
            download_failures=dict(memory.download_failures) if memory else {},
        )

    def drifted(self) -> bool:
        """The runtime no longer matches what the journal says runs (checked between
        passes only: during one, the runtime is expected to be in motion)."""
        state = self.journal.state
        if self.lock.locked() or state.in_flight is not None:
            return False
        status, running = self.runtime.status(), state.running_key
        if running is None:
            return status.release is not None
        return status.release != running or status.crash_looping

    def _pin(self) -> None:
        releases = self.journal.state.releases.values()
        self.artifacts.pin({a.digest for r in releases for a in r.artifacts})
