"""Rollout: canary (one vehicle per region-model) then one wave, with gates.

States: canary -> wave -> baking -> completed, or canary -> aborted (canary gate failed,
canaries rolled back), wave or baking -> rolled_back (wave gate failed, a tripwire while
baking, or an operator rollback; every vehicle the rollout changed is rolled back).
`paused` is orthogonal and only ever true in an active state: while paused no decision
is made and no deadline or bake clock runs. A final rollout is never paused.

Every decision is an event carrying its inputs (counts, thresholds, reason codes) and
its own reason code, so an auditor can see why it happened.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.events import GateEvaluation, RolloutPolicy
from muto.domain.model import stable_id
from muto.domain.model.rollout_states import (
    ACTIVE_STATES,
    DEFAULT_BAKE_SEC,
    FINAL_STATES,
    LIMITS,
    ROLLBACK_ENDS,
    RolloutFinal,
    RolloutState,
    RolloutStateError,
    phase_limit,
)
from muto.domain.reasons import ReasonCode
from muto.domain.requests import RolloutThresholds
from muto.domain.rollout_rules import MAX_PHASE_SEC, phase_deadline
from muto.domain.wire import to_builtins

# Re-exported: the aggregate's callers (API errors, projections, audit) name them here.
__all__ = [
    "ACTIVE_STATES",
    "DECISIONS",
    "DEFAULT_BAKE_SEC",
    "FINAL_STATES",
    "LIMITS",
    "Rollout",
    "RolloutFinal",
    "RolloutState",
    "RolloutStateError",
]


# State kept under these names, read through `Rollout.superseded` and
# `Rollout.desired_at_start` (snapshots taken before they were kept lack them).
_SUPERSEDED = "superseded"
_AT_START = "revisions_at_start"


def _seconds_between(start: str, end: str) -> float:
    if not start or not end:  # a time not recorded (events from before times were kept)
        return 0.0
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


class Rollout(Aggregate):
    @staticmethod
    def create_id(rollout_id: str, **_: Any) -> UUID:
        return stable_id("rollout", rollout_id)

    class Started(Aggregate.Created):
        """Schema v2: typed policy and thresholds. v1 thresholds stored before bakes
        existed have no `bakeSec`: those rollouts did not bake (upcast with 0).
        `repair` reads a deadline or bake stored before they were bounded (no date
        could hold such a deadline: it stopped the views) as MAX_PHASE_SEC."""

        class_version = 2
        rollout_id: str
        selector: str
        release_key: str
        manifest_digest: str
        policy: RolloutPolicy
        thresholds: RolloutThresholds
        canaries: list[str]
        wave: list[str]
        previous_releases: dict[str, str | None]
        started_at: str
        actor: str
        correlation_id: str
        # Each member's desired-state revision when the rollout started (None: it had
        # none); absent from rollouts started before it was kept (`desired_at_start`).
        desired_at_start: dict[str, str | None] | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["thresholds"].setdefault(LIMITS["baking"], DEFAULT_BAKE_SEC)

        @staticmethod
        def repair(state: dict[str, Any]) -> str | None:
            thresholds = state.get("thresholds")
            if not isinstance(thresholds, dict):
                return None
            said = []
            for name in LIMITS.values():
                value = thresholds.get(name)
                if isinstance(value, int | float) and value > MAX_PHASE_SEC:
                    thresholds[name] = MAX_PHASE_SEC
                    said.append(f"{name} {value} read as {MAX_PHASE_SEC}")
            return "; ".join(said) or None

    @event(Started)
    def __init__(
        self,
        rollout_id: str,
        selector: str,
        release_key: str,
        manifest_digest: str,
        policy: RolloutPolicy,
        thresholds: RolloutThresholds,
        canaries: list[str],
        wave: list[str],
        previous_releases: dict[str, str | None],
        started_at: str,
        actor: str,
        correlation_id: str,
        desired_at_start: dict[str, str | None] | None = None,
    ) -> None:
        self.rollout_id = rollout_id
        self.selector = selector
        self.release_key = release_key
        self.manifest_digest = manifest_digest
        # Plain dicts in the aggregate's state: its snapshots always encode.
        self.policy: dict[str, Any] = to_builtins(policy)
        self.thresholds: dict[str, Any] = to_builtins(thresholds)
        self.canaries = canaries
        self.wave = wave
        self.previous_releases = previous_releases
        self.state = RolloutState.CANARY.value
        self.paused = False
        self.assigned: dict[str, str] = {}  # vehicle id -> revision
        self.phase_started_at: dict[str, str] = {}
        self.rolled_back: list[str] = []
        self.left: list[str] = []  # relabelled out of the selector before their wave
        self.__dict__[_SUPERSEDED] = {}  # `superseded`
        self.__dict__[_AT_START] = desired_at_start  # read by `desired_at_start`
        self.paused_at = ""
        self.paused_sec: dict[str, float] = {}  # phase -> seconds spent paused in it

    @property
    def superseded(self) -> dict[str, str | None]:
        """Members given a newer desired state than the rollout's own (rollout_rules.
        supersedes): vehicle id -> the revision that superseded it. Not judged, never
        assigned or rolled back over. Kept in the state under this name; a rollout
        loaded from a snapshot taken before it was kept has none superseded."""
        found: dict[str, str | None] = self.__dict__.setdefault(_SUPERSEDED, {})
        return found

    def desired_at_start(self, vehicle_id: str) -> tuple[bool, str | None]:
        """(known, revision): a member's desired-state revision when the rollout started
        (None: it had none). Not known for a rollout started before it was kept, or
        loaded from a snapshot taken before then."""
        at_start: dict[str, str | None] | None = self.__dict__.get(_AT_START)
        if at_start is None or vehicle_id not in at_start:
            return False, None
        return True, at_start[vehicle_id]

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def _require(self, *states: RolloutState) -> None:
        if self.state not in states:
            allowed = ", ".join(states)
            raise RolloutStateError(f"rollout {self.rollout_id} is {self.state}, not {allowed}")

    # -- commands ---------------------------------------------------------------------

    def record_assigned(
        self,
        phase: str,
        revision: str,
        vehicle_ids: list[str],
        at: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        if self.paused:
            raise RolloutStateError(f"rollout {self.rollout_id} is paused")
        self._require(RolloutState(phase))
        self._phase_assigned(
            rollout_id=self.rollout_id,
            phase=phase,
            revision=revision,
            vehicle_ids=vehicle_ids,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )

    def decide(
        self,
        phase: RolloutState | str,
        *,
        passed: bool,
        evaluation: GateEvaluation,
        actor: str,
        correlation_id: str,
        at: str = "",
    ) -> None:
        """The gate of `phase`, the current one, decided: canary and wave gates, and the
        end of the bake (a pass completes it, a tripwire fails it)."""
        phase = RolloutState(phase)
        if phase not in ACTIVE_STATES:
            raise RolloutStateError(f"{phase} has no gate")
        self._require(phase)
        decision = DECISIONS[(phase, passed)]
        self.trigger_event(
            decision,
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            reason_code=decision.reason.value,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )

    def _require_active(self, why: str) -> None:
        """`why`: the refusal's reason, in the words of the command refused."""
        if self.is_final:
            raise RolloutFinal(f"rollout {self.rollout_id} is {self.state}: {why}")

    def pause(self, actor: str, correlation_id: str, at: str = "") -> None:
        self._require_active("a final rollout is never paused")
        if not self.paused:
            self._paused(
                rollout_id=self.rollout_id, at=at, actor=actor, correlation_id=correlation_id
            )

    def resume(self, actor: str, correlation_id: str, at: str = "") -> None:
        self._require_active("a final rollout cannot be resumed")
        if self.paused:
            self._resumed(
                rollout_id=self.rollout_id, at=at, actor=actor, correlation_id=correlation_id
            )

    def leave(self, vehicle_ids: list[str], at: str, actor: str, correlation_id: str) -> None:
        """Members that no longer match the selector when their wave is assigned leave
        the rollout: they are not assigned, not judged and not rolled back."""
        self._require(RolloutState.WAVE)
        self._members_left(
            rollout_id=self.rollout_id,
            vehicle_ids=vehicle_ids,
            selector=self.selector,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )

    def members(self) -> set[str]:
        """The vehicles still in the rollout: neither left nor superseded."""
        gone = set(self.left) | set(self.superseded)
        return {*self.canaries, *self.wave} - gone

    def supersede(
        self, superseded_by: dict[str, str | None], at: str, actor: str, correlation_id: str
    ) -> None:
        """Members whose desired state was replaced by a newer intent than the rollout's
        own (vehicle id -> the revision now theirs): the rollout no longer judges them,
        assigns them or rolls them back. Recorded whatever the state: it is a fact."""
        known = self.superseded
        fresh = {v: r for v, r in superseded_by.items() if known.get(v, "\0") != r}
        if fresh:
            self._members_superseded(
                rollout_id=self.rollout_id,
                superseded_by=fresh,
                at=at,
                actor=actor,
                correlation_id=correlation_id,
            )

    def deadline(self, phase: str) -> str | None:
        """When `phase` (canary, wave: its deadline; baking: the end of the bake) times
        out, as an ISO time; None before the phase started. Paused time pushes it out."""
        started = self.phase_started_at.get(phase)
        if started is None:
            return None
        limit, paused = phase_limit(self.thresholds, phase), self.paused_sec.get(phase, 0.0)
        return phase_deadline(datetime.fromisoformat(started), limit, paused).isoformat()

    def record_rolled_back(
        self, revision: str, vehicle_ids: list[str], cause: str, actor: str, correlation_id: str
    ) -> None:
        """Rollback revisions were assigned to `vehicle_ids` (a new, higher revision
        pointing to each vehicle's previous release)."""
        self._rolled_back(
            rollout_id=self.rollout_id,
            revision=revision,
            vehicle_ids=vehicle_ids,
            cause=cause,
            actor=actor,
            correlation_id=correlation_id,
        )

    # -- events -----------------------------------------------------------------------

    @event("PhaseAssigned")
    def _phase_assigned(
        self,
        rollout_id: str,
        phase: str,
        revision: str,
        vehicle_ids: list[str],
        at: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        for vehicle_id in vehicle_ids:
            self.assigned[vehicle_id] = revision
        self.phase_started_at.setdefault(phase, at)

    def _end(self, state: RolloutState) -> None:
        self.state = state.value
        if self.is_final:
            self.paused = False  # a final rollout is never paused

    class Decided(Aggregate.Event):
        """A gate's decision, with its inputs and its reason code. Schema v2: `reason_code`
        and `at` are always there; v1 events stored before decisions carried them are
        upcast with "" (what they meant then)."""

        class_version = 2
        reason: ClassVar[ReasonCode]
        ends_in: ClassVar[RolloutState]

        rollout_id: str
        evaluation: GateEvaluation
        reason_code: str
        at: str
        actor: str
        correlation_id: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("reason_code", "")
            state.setdefault("at", "")

        def apply(self, aggregate: Any) -> None:
            aggregate._end(self.ends_in)
            if self.ends_in is RolloutState.BAKING:  # the bake's clock starts now
                aggregate.phase_started_at.setdefault(RolloutState.BAKING.value, self.at)

    class CanaryGatePassed(Decided):
        reason = ReasonCode.CANARY_GATE_PASSED
        ends_in = RolloutState.WAVE

    class CanaryGateFailed(Decided):
        reason = ReasonCode.CANARY_GATE_FAILED
        ends_in = RolloutState.ABORTED

    class WaveGatePassed(Decided):
        reason = ReasonCode.WAVE_GATE_PASSED
        ends_in = RolloutState.BAKING

    class WaveGateFailed(Decided):
        reason = ReasonCode.WAVE_GATE_FAILED
        ends_in = RolloutState.ROLLED_BACK

    class BakeCompleted(Decided):
        reason = ReasonCode.BAKE_COMPLETED
        ends_in = RolloutState.COMPLETED

    class BakeFailed(Decided):
        reason = ReasonCode.BAKE_FAILED
        ends_in = RolloutState.ROLLED_BACK

    @event("Paused")
    def _paused(self, rollout_id: str, actor: str, correlation_id: str, at: str = "") -> None:
        self.paused = True
        self.paused_at = at

    @event("Resumed")
    def _resumed(self, rollout_id: str, actor: str, correlation_id: str, at: str = "") -> None:
        self.paused = False
        held = _seconds_between(self.paused_at, at)
        self.paused_sec[self.state] = self.paused_sec.get(self.state, 0.0) + held
        self.paused_at = ""

    @event("MembersLeft")
    def _members_left(
        self,
        rollout_id: str,
        vehicle_ids: list[str],
        selector: str,
        at: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.left.extend(v for v in vehicle_ids if v not in self.left)

    @event("MembersSuperseded")
    def _members_superseded(
        self,
        rollout_id: str,
        superseded_by: dict[str, str | None],
        at: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.superseded.update(superseded_by)

    @event("RolledBack")
    def _rolled_back(
        self,
        rollout_id: str,
        revision: str,
        vehicle_ids: list[str],
        cause: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.rolled_back.extend(v for v in vehicle_ids if v not in self.rolled_back)
        if self.state in ROLLBACK_ENDS:
            self._end(RolloutState.ROLLED_BACK)


# (state, passed) -> the decision event: one table for every gate.
DECISIONS: dict[tuple[RolloutState, bool], type[Rollout.Decided]] = {
    (RolloutState.CANARY, True): Rollout.CanaryGatePassed,
    (RolloutState.CANARY, False): Rollout.CanaryGateFailed,
    (RolloutState.WAVE, True): Rollout.WaveGatePassed,
    (RolloutState.WAVE, False): Rollout.WaveGateFailed,
    (RolloutState.BAKING, True): Rollout.BakeCompleted,
    (RolloutState.BAKING, False): Rollout.BakeFailed,
}
