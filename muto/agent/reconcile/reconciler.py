"""The reconcile pass: intake -> observe -> plan -> act, until the plan gives a verdict.

Invariants: single flight (one pass at a time per agent, and only the pass acts on the
runtime or journals a step); each round re-observes, so every decision sees the outcome
of the step before it; the artifacts of the running release, the desired one, the one
in flight and their rollback targets are pinned before each round (`kept`). A section of
a pass that only waits on the network (the fetch, a FetchArtifacts download) may be
pre-empted by the agent's watcher (`preempt`) when the running release needs the pass
now: it journals nothing half-way, so cutting it short leaves the journal as it was, and
the pass looks again.
A newer desired state announced meanwhile (a notify, or a poll during a download: only
a hint, unverified) stops the pass going on toward the older one: the fetch or download
in progress is pre-empted (`preempt_for_newer`), or the apply about to start is held
back, and the pass fetches and verifies at once before it plans again. A hint whose
fetch finds nothing newer stops nothing more of that kind in the pass, and no hinted
sequence stops the same thing twice: a forged notify cannot stall the vehicle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from muto.agent.artifacts import ArtifactSource
from muto.agent.clock import Clock
from muto.agent.journal import Journal
from muto.agent.journal.events import PassPreempted
from muto.agent.journal.state import JournalState
from muto.agent.reconcile.executor import Executor
from muto.agent.reconcile.gather import PassMemory
from muto.agent.reconcile.intake import Intake
from muto.agent.reconcile.liveness import Degradation, Liveness
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import (
    drifted,
    not_running,
    plan,
    restore_lost,
    rollback_target,
)
from muto.agent.reconcile.settle import settle
from muto.agent.reconcile.steps import Apply, FetchArtifacts, PassVerdict, Step
from muto.agent.runtime.base import KeepsReleases, RuntimeAdapter, RuntimeStatus
from muto.agent.safety import VehicleStateProvider, with_free_disk
from muto.agent.signals import Signals
from muto.domain.gates import SafetyFloor
from muto.domain.messages import AgentPhase
from muto.domain.reasons import ReasonCode

logger = logging.getLogger("muto.agent")
MAX_ROUNDS = 32  # a pass needs a handful; more means a planner bug, not a busy vehicle
T = TypeVar("T")
Section = Literal["fetch", "download"]  # what a pass may be pre-empted in
Stop = Literal["fetch", "download", "apply"]  # what a newer desired state may stop
# More free disk than this since an apply found the disk full is room made (an operator's
# clean-up), not noise (a log rotated, the journal checkpointed).
ROOM_MB = 1.0
DISK = ReasonCode.INSUFFICIENT_DISK
# Tried again after this long all the same: the disk the runtime filled may not be the one
# the agent measures (podman's image store on its own partition).
ROOM_RETRY_S = 3600.0


def kept(s: JournalState) -> set[str]:
    """The releases whose artifacts the cache pins: the running one, the desired one, the
    one in flight, and what a failure of any of them (or the failure whose rollback is
    due) rolls back to (rollback_target). Older known good stay cached while the budget
    has room; a rollback that reaches one downloads it again."""
    due = s.rollback_due
    desired = s.desired.release.key if s.desired and s.desired.release else None
    in_flight = s.in_flight.release_key if s.in_flight else None
    used = {k for k in (s.running_key, desired, in_flight) if k is not None}
    failing = used | ({due.failed_key} if due else set())
    targets = {rollback_target(s, k) for k in failing}
    return {k for k in used | targets if k is not None and k in s.releases}


@dataclass(frozen=True)
class NoRoom:
    """An apply the runtime refused for want of disk with nothing left in the cache to
    free, or a download the disk refused (an image store full), under the desired
    sequence; the free disk (MB) and the monotonic time then. Trying it again would
    journal the same refusal and rewrite the release's files, or download it whole
    again, every poll: it waits for more room, another revision or ROOM_RETRY_S (an
    agent restart tries once more)."""

    release_key: str
    sequence: int | None
    free_mb: float
    at: float

    def holds(
        self, release_key: str, sequence: int | None, free_mb: float | None, now: float
    ) -> bool:
        same = (release_key, sequence) == (self.release_key, self.sequence)
        no_more_room = free_mb is not None and free_mb < self.free_mb + ROOM_MB
        return same and no_more_room and now - self.at < ROOM_RETRY_S


def stops_for_newer(
    stop: Stop,
    hinted: int,
    accepted: int,
    *,
    spent: Collection[str] = (),
    acted: Collection[tuple[Stop, int]] = (),
    asked: int = 0,
) -> bool:
    """Whether the sequence the latest hint announced (`hinted`, unverified) stops `stop`
    in a pass whose accepted desired state has sequence `accepted`: only news stops
    anything; what a stop in this pass found nothing newer for (`spent`) is not stopped
    again in it; a hinted sequence never stops the same kind of thing twice (`acted`);
    and a fetch is cut only for a hint that came after it was asked (`asked`: the hint
    then), as one asked later brings whatever the cloud has."""
    if hinted <= accepted or stop in spent or (stop, hinted) in acted:
        return False
    return stop != "fetch" or hinted != asked


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
    # The apply refused for want of disk with nothing left to free: not tried again until
    # there is more room or another revision (its pass ends `blocked` as the refusal's did).
    no_room: NoRoom | None = None
    _section: asyncio.Task[Any] | None = field(default=None, init=False, repr=False)
    _section_kind: Section | None = field(default=None, init=False, repr=False)
    _cut_for: Literal["drift", "newer"] | None = field(default=None, init=False, repr=False)
    _asked: int = field(default=0, init=False, repr=False)  # the hint as the fetch began
    # What hinted sequences already stopped (across passes: a forged notify sent again
    # stops nothing more); forgotten once the accepted sequence reaches them.
    _acted: set[tuple[Stop, int]] = field(default_factory=set, init=False, repr=False)
    _memory: PassMemory | None = field(default=None, init=False, repr=False)

    async def run_pass(self, fetch: bool = True) -> PassVerdict:
        async with self.lock:
            memory = self._memory = PassMemory()
            try:
                if fetch:
                    await self._take_in(memory)
                while (verdict := await self._rounds(memory)) is None:
                    await self._take_in(memory)  # a newer desired state hinted: take it first
                self.verdict = verdict
                return verdict
            finally:
                self._memory = None
                self.signals.set_phase(AgentPhase.IDLE)

    async def _take_in(self, memory: PassMemory) -> None:
        """Fetch, verify and accept (intake). Cut short for a newer desired state hinted
        after it was asked, it is asked again at once; for the running release (drift),
        the pass goes on and the next one asks."""
        trusted = self.vehicle.read().clock_trusted
        while isinstance(
            missed := await self._preemptible(self.intake.run(trusted), "fetch"), Preempted
        ):
            if self._cut_for != "newer":
                self.signals.trigger("fetch pre-empted")  # ask again right after
                return
        self.reached_cloud = missed is None or missed.why != "unreachable"
        self._judge(memory)

    def _judge(self, memory: PassMemory) -> None:
        """After the fetch that follows a stop for a newer desired state: when it took in
        nothing newer (a forged notify, an API process that had not heard of the change
        yet, the cloud out of reach), hints stop nothing more of that kind in this pass;
        the pass goes on toward the accepted state (a download resumes from its partial)."""
        accepted = self.journal.state.accepted_sequence
        self._acted = {(stop, seq) for stop, seq in self._acted if seq > accepted}
        if memory.stopped is None:
            return
        stop, before, hinted = memory.stopped
        memory.stopped = None
        if accepted <= before:
            memory.spent.add(stop)
            logger.info(
                "sequence %d was announced but the cloud has nothing newer than %d: the %s "
                "goes on, and no announcement stops it again in this pass",
                hinted,
                accepted,
                stop,
            )

    async def _rounds(self, memory: PassMemory) -> PassVerdict | None:
        """Observe, plan, act until a verdict; None when the pass stopped to take in a
        newer desired state first."""
        for _ in range(MAX_ROUNDS):
            self._pin()
            observed = await self.observe(memory)
            self.lost = observed.journal.running_key if restore_lost(observed) else None
            decided = plan(self.journal.state.desired, observed, self.clock.now())
            if not await self._act(decided.steps, memory, observed):
                if memory.stopped is not None:
                    return None  # a newer desired state: fetch it before anything else
                continue  # pre-empted: look again before anything else is decided
            if decided.verdict is not None:
                return decided.verdict
        logger.error("reconcile did not settle in %d rounds", MAX_ROUNDS)
        return PassVerdict("settled")

    async def _act(self, steps: Sequence[Step], memory: PassMemory, observed: Observed) -> bool:
        """Run `steps`; False when one was pre-empted or held back (the rest are not run)."""
        for step in steps:
            if isinstance(step, FetchArtifacts):  # only waits on the network
                sequence = self._desired_sequence()
                if self._no_room_for(step.release_key, sequence, observed, memory):
                    return False
                done = await self._preemptible(self.executor.run(step, memory), "download")
                if isinstance(done, Preempted):
                    if self._cut_for == "newer":
                        release = self.journal.state.releases[step.release_key]
                        held = await self.executor.gatherer.present(step.digests, [release])
                        cut = [d for d in step.digests if d not in held]
                        self._note_preempted("download", step.release_key, memory, cut)
                    return False
                if any(memory.download_failures.get(d) == DISK for d in step.digests):
                    self._no_room(step.release_key, sequence, observed)
            elif isinstance(step, Apply) and (
                self._holds(step, observed, memory)
                or self._no_room_for(step.release_key, step.sequence, observed, memory)
            ):
                return False
            else:
                await self.executor.run(step, memory)
                if isinstance(step, Apply):
                    self._note_no_room(step, observed, memory)
        return True

    def _no_room_for(
        self, release_key: str, sequence: int | None, observed: Observed, memory: PassMemory
    ) -> bool:
        """A release the disk refused (its apply, with nothing to free; or a download),
        and since then no more room, no other revision and less than ROOM_RETRY_S: the
        pass sees it refused again (its artifacts as downloads that found the disk full:
        `blocked` INSUFFICIENT_DISK), journaling and downloading nothing."""
        no_room = self.no_room
        free_mb, now = observed.vehicle.free_disk_mb, self.clock.monotonic()
        if no_room is None or not no_room.holds(release_key, sequence, free_mb, now):
            return False
        release = self.journal.state.releases[release_key]
        for artifact in release.artifacts:
            memory.download_failures[artifact.digest] = DISK
        return True

    def _note_no_room(self, step: Apply, observed: Observed, memory: PassMemory) -> None:
        self.no_room = None
        if memory.no_room == step.release_key:
            self._no_room(step.release_key, step.sequence, observed)

    def _no_room(self, release_key: str, sequence: int | None, observed: Observed) -> None:
        free_mb = observed.vehicle.free_disk_mb
        if free_mb is None:
            return
        self.no_room = NoRoom(release_key, sequence, free_mb, self.clock.monotonic())
        logger.info(
            "%s does not fit on the disk (%.0f MB free here) and the cache has nothing "
            "left to free: not tried again for an hour, unless there is more room or "
            "another revision",
            release_key,
            free_mb,
        )

    def _desired_sequence(self) -> int | None:
        desired = self.journal.state.desired
        return desired.sequence if desired is not None else None

    def _holds(self, step: Apply, observed: Observed, memory: PassMemory) -> bool:
        """The last moment before anything on the vehicle changes: a newer desired state
        announced since this one was accepted (the operator's rollback of the release
        about to be applied) is fetched first, and the older release is not applied. A
        restore, or an apply that replaces a running release that is down, is not held:
        what ran must run again (restores and rollbacks are never held back)."""
        s = observed.journal
        if step.restore or not_running(s, observed.runtime, observed.stack_down):
            return False
        if not self._stops("apply", memory):
            return False
        logger.info(
            "not applying %s: desired state sequence %d was announced, above the accepted %d; "
            "fetching it first",
            step.release_key,
            self.signals.hinted,
            s.accepted_sequence,
        )
        self._note_preempted("apply", step.release_key, memory)
        return True

    def _stops(self, stop: Stop, memory: PassMemory) -> bool:
        """Whether the latest hint stops `stop` now (stops_for_newer); if so, it is
        remembered, and the fetch that follows judges it (`_judge`)."""
        hinted, accepted = self.signals.hinted, self.journal.state.accepted_sequence
        if not stops_for_newer(
            stop, hinted, accepted, spent=memory.spent, acted=self._acted, asked=self._asked
        ):
            return False
        self._acted.add((stop, hinted))
        if stop == "fetch":
            memory.spent.add(stop)  # once a pass: a flood of hints cannot keep it from asking
        memory.stopped = (stop, accepted, hinted)
        return True

    def _note_preempted(
        self,
        stopped: Literal["download", "apply"],
        release_key: str,
        memory: PassMemory,
        digests: Sequence[str] = (),
    ) -> None:
        """The journal says why the pass stopped short (a download journals nothing
        half-way itself; a held apply would journal nothing at all)."""
        assert memory.stopped is not None
        _, accepted, hinted = memory.stopped
        self.journal.append(
            PassPreempted(
                at=self.clock.now(),
                stopped=stopped,
                sequence=hinted,
                accepted=accepted,
                release_key=release_key,
                digests=list(digests),
            )
        )

    async def _preemptible(self, work: Coroutine[Any, Any, T], kind: Section) -> T | Preempted:
        """Run `work` so that `preempt` can cut it short. A cancelled pass (a stop)
        cancels it too, and waits for it to unwind."""
        task = asyncio.ensure_future(work)
        self._section, self._section_kind, self._cut_for = task, kind, None
        if kind == "fetch":
            self._asked = self.signals.hinted
        self.preempt_for_newer()  # announced before this section began: it does not start
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            await settle(task)
            raise
        finally:
            self._section = self._section_kind = None
        if task.cancelled():
            return PREEMPTED
        return task.result()

    @property
    def downloading(self) -> bool:
        """A FetchArtifacts download of the pass is in progress (the agent's watcher polls
        during it: a newer desired state is not left unseen for the whole download)."""
        return self._section_kind == "download" and self._cuttable()

    def _cuttable(self) -> bool:
        section = self._section
        return section is not None and not section.done() and self._cut_for is None

    def preempt(self) -> bool:
        """Cut short the section of the pass in progress that only waits on the network
        (the fetch, a download), so the pass looks again at once: the watcher calls it when
        the running release needs the pass now (a crash loop, a stack not running). Such a
        section journals nothing half-way: a download keeps its partial and resumes, a
        fetch is asked again. True if there was one to cut."""
        if not self._cuttable():
            return False
        logger.info("pre-empting the pass's wait on the network: the running release needs it")
        self._cut("drift")
        return True

    def preempt_for_newer(self) -> bool:
        """Cut short the fetch or download in progress when the latest hint announces a
        desired state newer than the accepted one (stops_for_newer): the pass fetches and
        verifies at once, then plans again; a download keeps its partial, and resumes if
        nothing newer came. The watcher calls it when a hint arrives and at each check;
        a section calls it as it begins. True if it cut one."""
        kind, memory = self._section_kind, self._memory
        if kind is None or memory is None or not self._cuttable() or not self._stops(kind, memory):
            return False
        logger.info(
            "pre-empting the pass's %s: desired state sequence %d was announced, above the "
            "accepted %d",
            kind,
            self.signals.hinted,
            self.journal.state.accepted_sequence,
        )
        self._cut("newer")
        return True

    def _cut(self, why: Literal["drift", "newer"]) -> None:
        assert self._section is not None
        self._cut_for = why
        self._section.cancel()

    async def observe(self, memory: PassMemory | None = None) -> Observed:
        state = self.journal.state
        releases = state.releases.values()
        digests = {a.digest for r in releases for a in r.artifacts}
        cached = await self.executor.gatherer.present(digests, releases)
        status = self.runtime.status()
        return Observed(
            journal=state,
            runtime=status,
            vehicle=with_free_disk(self.vehicle.read(), self.data_dir),
            cached=cached,
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
        state = self.journal.state
        releases = [state.releases[k] for k in kept(state)]
        self.artifacts.pin({a.digest for r in releases for a in r.artifacts})
        if isinstance(self.runtime, KeepsReleases):  # before the round's restore too
            self.runtime.keep_releases(state.known_good)
