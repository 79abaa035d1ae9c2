"""The executor table: each step kind -> the adapter calls that carry it out.

Invariants:
- a step that changes what runs journals its start before it touches the runtime and
  its outcome after, so an agent that dies in between knows, on restart, what it was
  doing (start-up recovery resumes it or rolls back);
- `runtime.apply` is never cut short: a cancellation (SIGTERM) waits for the atomic
  switch to finish and journals its outcome first;
- a readiness wait cut short by a planned shutdown is journaled as abandoned;
- every expected failure becomes a journaled reason code, never an exception out of here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from muto.agent.artifacts import ArtifactSource
from muto.agent.clock import Clock
from muto.agent.journal import Journal
from muto.agent.journal.events import (
    ApplyFailed,
    ApplyStarted,
    ApplySucceeded,
    ArtifactsVerified,
    CrashLoopDetected,
    DriftDetected,
    Event,
    GatesEvaluated,
    GraphDegraded,
    ReadinessPassed,
    RuntimeStopped,
    StepAbandoned,
)
from muto.agent.kill import KillSwitch
from muto.agent.reconcile.gather import Gatherer, PassMemory
from muto.agent.reconcile.rollback import Restorer
from muto.agent.reconcile.settle import as_reason, failure_of, not_ready, settle
from muto.agent.reconcile.steps import (
    Apply,
    AwaitReadiness,
    FetchArtifacts,
    NoteCrashLoop,
    NoteGates,
    NoteGraphDegraded,
    NoteRestoreFailed,
    QueueReport,
    Rollback,
    Step,
    StopRuntime,
)
from muto.agent.reports import reconcile_event
from muto.agent.runtime.base import RuntimeAdapter, own_fetcher
from muto.agent.signals import Signals
from muto.domain.messages import AgentPhase
from muto.domain.reasons import ReasonCode

# Failures of an apply that leave what runs untouched, and condemn nothing (_blocked).
NOT_PUT_IN_PLACE = frozenset({ReasonCode.INSUFFICIENT_DISK, ReasonCode.ARTIFACT_DOWNLOAD_FAILED})


@dataclass
class Executor:
    vehicle_id: str
    journal: Journal
    runtime: RuntimeAdapter
    artifacts: ArtifactSource
    clock: Clock
    kill: KillSwitch = field(default_factory=KillSwitch)
    signals: Signals = field(default_factory=Signals)

    def __post_init__(self) -> None:
        fetcher = own_fetcher(self.runtime)
        self.gatherer = Gatherer(
            self.journal, self.artifacts, self.clock, self.kill, fetcher, self.signals
        )
        self._restorer = Restorer(self.journal, self.runtime, self.gatherer, self.clock, self.kill)
        self._table: dict[type[Step], Callable[[Any, PassMemory], Awaitable[None]]] = {
            QueueReport: self._report,
            NoteGates: self._gates,
            FetchArtifacts: self._fetch,
            Apply: self._apply,
            AwaitReadiness: self._readiness,
            NoteCrashLoop: self._crash_loop,
            NoteGraphDegraded: self._graph_degraded,
            NoteRestoreFailed: self._restore_failed,
            Rollback: self._rollback,
            StopRuntime: self._stop,
        }

    async def run(self, step: Step, memory: PassMemory) -> None:
        await self._table[type(step)](step, memory)

    def _note(self, *events: Event) -> None:
        self.journal.append(*events)

    async def _report(self, step: QueueReport, _: PassMemory) -> None:
        self.kill("report")
        state = self.journal.state
        self._note(reconcile_event(self.vehicle_id, state, step.outcome, self.clock.now()))
        self.kill("report:done")
        self.signals.report_queued()

    async def _gates(self, step: NoteGates, _: PassMemory) -> None:
        self.signals.set_phase(AgentPhase.GATING)
        self.kill("gates")
        at = self.clock.now()
        self._note(
            GatesEvaluated(at=at, revision=step.revision, sequence=step.sequence, codes=step.codes)
        )
        self.kill("gates:done")

    async def _fetch(self, step: FetchArtifacts, memory: PassMemory) -> None:
        release = self.journal.state.releases[step.release_key]
        wanted = set(step.digests)
        await self.gatherer.gather(
            release, memory, [a for a in release.artifacts if a.digest in wanted]
        )

    async def _apply(self, step: Apply, memory: PassMemory) -> None:
        release = self.journal.state.releases[step.release_key]
        paths = await self.gatherer.gather(release, memory, release.artifacts)
        if paths is None:
            return  # journaled (ArtifactFailed); the planner sees it in download_failures
        self.signals.set_phase(AgentPhase.APPLYING)
        now = self.clock.now()
        events: list[Event] = [ArtifactsVerified(at=now, release_key=release.key, digests=[*paths])]
        if step.restore:
            status = self.runtime.status()
            # A release the runtime still names but reports down runs no more than none.
            up = status.alive or status.restarting
            observed = status.release if up else None
            events.append(DriftDetected(at=now, expected=release.key, observed=observed))
        events.append(
            ApplyStarted(
                at=now,
                release_key=release.key,
                revision=step.revision,
                sequence=step.sequence,
                replacing=step.replacing,
                restore=step.restore,
            )
        )
        self._note(*events)
        self.kill("apply")
        ran = self.runtime.status().release
        began = self.clock.monotonic()
        task = asyncio.ensure_future(self.runtime.apply(release, paths))
        cancelled = await settle(task)
        failure = failure_of(task, ReasonCode.APPLY_FAILED)
        if failure is None:
            took = self.clock.monotonic() - began
            self._note(ApplySucceeded(at=self.clock.now(), release_key=release.key, apply_sec=took))
        else:
            blocked = self._blocked(step, failure.code, ran)
            if blocked:
                # As a download of this pass that failed: the planner sees it (blocked or
                # failed for the rest of the pass), the next pass tries again.
                for artifact in release.artifacts:
                    memory.download_failures[artifact.digest] = failure.code
            self._note(
                ApplyFailed(
                    at=self.clock.now(),
                    release_key=release.key,
                    code=failure.code,
                    detail=failure.detail,
                    blocked=blocked,
                )
            )
            if blocked and failure.code == ReasonCode.INSUFFICIENT_DISK:
                self._make_room(release.key, memory)
        self.kill("apply:done")
        if cancelled:
            raise asyncio.CancelledError

    def _blocked(self, step: Apply, code: ReasonCode, ran: str | None) -> bool:
        """The release could not be put in place, what runs untouched: a full disk, or
        content the runtime fetches itself that did not come (an image removed since it
        was fetched, which the apply's own short pull could not get back). The
        runtime stops what runs only after the new release is ready to start
        (RuntimeAdapter), so if it still runs what it ran, nothing was stopped and nothing
        failed: as a download of the pass, blocked (a full disk) or failed
        (ARTIFACT_DOWNLOAD_FAILED), and tried again at the next pass, the release not
        condemned for want of a disk or a network. A restore is not: what it restores
        had already stopped."""
        return (
            not step.restore and code in NOT_PUT_IN_PLACE and self.runtime.status().release == ran
        )

    def _make_room(self, release_key: str, memory: PassMemory) -> None:
        """The release did not fit on the disk: the cache's unpinned artifacts (a blocked
        release the operator moved on from, older known good) make way for the next pass's
        try. With nothing left to free, trying again says nothing new until there is more
        room (`memory.no_room`)."""
        if not self.gatherer.free_room():
            memory.no_room = release_key

    async def _readiness(self, step: AwaitReadiness, _: PassMemory) -> None:
        release = self.journal.state.releases[step.release_key]
        self.signals.set_phase(AgentPhase.CHECKING_READINESS)
        self.kill("readiness")
        began = self.clock.monotonic()
        try:
            await self.runtime.wait_ready(release.health_model)
        except asyncio.CancelledError:
            self._note(StepAbandoned(at=self.clock.now(), step="readiness"))
            raise
        except Exception as exc:
            self._note(
                not_ready(release.key, as_reason(exc, ReasonCode.READINESS_TIMEOUT), self.clock)
            )
        else:
            took = self.clock.monotonic() - began
            self._note(
                ReadinessPassed(at=self.clock.now(), release_key=release.key, readiness_sec=took)
            )
        self.kill("readiness:done")

    async def _crash_loop(self, step: NoteCrashLoop, _: PassMemory) -> None:
        self._note(
            CrashLoopDetected(
                at=self.clock.now(),
                release_key=step.release_key,
                during="running",
                revision=step.revision,
                sequence=step.sequence,
            )
        )

    async def _graph_degraded(self, step: NoteGraphDegraded, _: PassMemory) -> None:
        self._note(
            GraphDegraded(
                at=self.clock.now(),
                release_key=step.release_key,
                detail=step.detail,
                degraded_sec=step.degraded_sec,
                revision=step.revision,
                sequence=step.sequence,
            )
        )

    async def _restore_failed(self, step: NoteRestoreFailed, _: PassMemory) -> None:
        # Journaled as the apply it could not be: the fold fails the release and owes
        # the rollback, as for a restore whose apply failed.
        detail = f"{step.release_key} cannot be restored: its artifacts are not to be had"
        self._note(
            ApplyFailed(
                at=self.clock.now(),
                release_key=step.release_key,
                code=step.code,
                detail=detail,
                revision=step.revision,
                sequence=step.sequence,
            )
        )

    async def _rollback(self, step: Rollback, memory: PassMemory) -> None:
        self.signals.set_phase(AgentPhase.ROLLING_BACK)
        await self._restorer.run(step, memory)

    async def _stop(self, step: StopRuntime, _: PassMemory) -> None:
        await self.runtime.stop()
        self._note(RuntimeStopped(at=self.clock.now(), reason=step.reason))
