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
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.model import stable_id
from muto.domain.reasons import ReasonCode
from muto.domain.rollout_rules import phase_deadline


class RolloutState(StrEnum):
    CANARY = "canary"
    WAVE = "wave"
    BAKING = "baking"  # the wave passed its gate; still watched for tripwires
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


FINAL_STATES = frozenset({RolloutState.COMPLETED, RolloutState.ABORTED, RolloutState.ROLLED_BACK})
ACTIVE_STATES = (RolloutState.CANARY, RolloutState.WAVE, RolloutState.BAKING)


# A rollback ends these states; an aborted rollout stays aborted (its story is the canary).
ROLLBACK_ENDS = frozenset(
    {RolloutState.CANARY, RolloutState.WAVE, RolloutState.BAKING, RolloutState.COMPLETED}
)


# The threshold that limits each timed phase.
LIMITS = {"canary": "canaryDeadlineSec", "wave": "waveDeadlineSec", "baking": "bakeSec"}
DEFAULT_BAKE_SEC = 0.0  # rollouts started before bakes existed did not bake


class RolloutStateError(ValueError):
    """A command that the rollout's current state does not allow (HTTP 409)."""

    code = "conflict"


class RolloutFinal(RolloutStateError):
    """Pause or resume of a rollout that is final (HTTP 409 `rollout_final`)."""

    code = "rollout_final"


def _seconds_between(start: str, end: str) -> float:
    if not start or not end:  # a time not recorded (events from before times were kept)
        return 0.0
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


class Rollout(Aggregate):
    @staticmethod
    def create_id(rollout_id: str, **_: Any) -> UUID:
        return stable_id("rollout", rollout_id)

    @event("Started")
    def __init__(
        self,
        rollout_id: str,
        selector: str,
        release_key: str,
        manifest_digest: str,
        policy: dict[str, Any],
        thresholds: dict[str, Any],
        canaries: list[str],
        wave: list[str],
        previous_releases: dict[str, str | None],
        started_at: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.rollout_id = rollout_id
        self.selector = selector
        self.release_key = release_key
        self.manifest_digest = manifest_digest
        self.policy = policy
        self.thresholds = thresholds
        self.canaries = canaries
        self.wave = wave
        self.previous_releases = previous_releases
        self.state = RolloutState.CANARY.value
        self.paused = False
        self.assigned: dict[str, str] = {}  # vehicle id -> revision
        self.phase_started_at: dict[str, str] = {}
        self.rolled_back: list[str] = []
        self.left: list[str] = []  # relabelled out of the selector before their wave
        self.paused_at = ""
        self.paused_sec: dict[str, float] = {}  # phase -> seconds spent paused in it

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

    def pass_canary(
        self, evaluation: dict[str, Any], actor: str, correlation_id: str, at: str = ""
    ) -> None:
        self._require(RolloutState.CANARY)
        self._canary_gate_passed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            reason_code=ReasonCode.CANARY_GATE_PASSED.value,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )

    def fail_canary(
        self, evaluation: dict[str, Any], actor: str, correlation_id: str, at: str = ""
    ) -> None:
        self._require(RolloutState.CANARY)
        self._canary_gate_failed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            reason_code=ReasonCode.CANARY_GATE_FAILED.value,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )

    def pass_wave(
        self, evaluation: dict[str, Any], actor: str, correlation_id: str, at: str = ""
    ) -> None:
        """The wave passed its gate: it bakes (stays watched) before the rollout is final."""
        self._require(RolloutState.WAVE)
        self._wave_gate_passed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            reason_code=ReasonCode.WAVE_GATE_PASSED.value,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )

    def fail_wave(
        self, evaluation: dict[str, Any], actor: str, correlation_id: str, at: str = ""
    ) -> None:
        self._require(RolloutState.WAVE)
        self._wave_gate_failed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            reason_code=ReasonCode.WAVE_GATE_FAILED.value,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )

    def complete_bake(
        self, evaluation: dict[str, Any], actor: str, correlation_id: str, at: str = ""
    ) -> None:
        self._require(RolloutState.BAKING)
        self._bake_completed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            reason_code=ReasonCode.BAKE_COMPLETED.value,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )

    def fail_bake(
        self, evaluation: dict[str, Any], actor: str, correlation_id: str, at: str = ""
    ) -> None:
        self._require(RolloutState.BAKING)
        self._bake_failed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            reason_code=ReasonCode.BAKE_FAILED.value,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )

    def _require_active(self) -> None:
        if self.is_final:
            raise RolloutFinal(
                f"rollout {self.rollout_id} is {self.state}: a final rollout is never paused"
            )

    def pause(self, actor: str, correlation_id: str, at: str = "") -> None:
        self._require_active()
        if not self.paused:
            self._paused(
                rollout_id=self.rollout_id, at=at, actor=actor, correlation_id=correlation_id
            )

    def resume(self, actor: str, correlation_id: str, at: str = "") -> None:
        self._require_active()
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

    def deadline(self, phase: str) -> str | None:
        """When `phase` (canary, wave: its deadline; baking: the end of the bake) times
        out, as an ISO time; None before the phase started. Paused time pushes it out."""
        started = self.phase_started_at.get(phase)
        if started is None:
            return None
        limit = float(self.thresholds.get(LIMITS[phase], DEFAULT_BAKE_SEC))
        paused = self.paused_sec.get(phase, 0.0)
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

    @event("CanaryGatePassed")
    def _canary_gate_passed(
        self,
        rollout_id: str,
        evaluation: dict[str, Any],
        actor: str,
        correlation_id: str,
        reason_code: str = "",  # "" in events stored before decisions carried codes
        at: str = "",
    ) -> None:
        self._end(RolloutState.WAVE)

    @event("CanaryGateFailed")
    def _canary_gate_failed(
        self,
        rollout_id: str,
        evaluation: dict[str, Any],
        actor: str,
        correlation_id: str,
        reason_code: str = "",  # "" in events stored before decisions carried codes
        at: str = "",
    ) -> None:
        self._end(RolloutState.ABORTED)

    @event("WaveGatePassed")
    def _wave_gate_passed(
        self,
        rollout_id: str,
        evaluation: dict[str, Any],
        actor: str,
        correlation_id: str,
        reason_code: str = "",  # "" in events stored before decisions carried codes
        at: str = "",
    ) -> None:
        self._end(RolloutState.BAKING)
        self.phase_started_at.setdefault(RolloutState.BAKING.value, at)

    @event("WaveGateFailed")
    def _wave_gate_failed(
        self,
        rollout_id: str,
        evaluation: dict[str, Any],
        actor: str,
        correlation_id: str,
        reason_code: str = "",  # "" in events stored before decisions carried codes
        at: str = "",
    ) -> None:
        self._end(RolloutState.ROLLED_BACK)

    @event("BakeCompleted")
    def _bake_completed(
        self,
        rollout_id: str,
        evaluation: dict[str, Any],
        actor: str,
        correlation_id: str,
        reason_code: str = "",  # "" in events stored before decisions carried codes
        at: str = "",
    ) -> None:
        self._end(RolloutState.COMPLETED)

    @event("BakeFailed")
    def _bake_failed(
        self,
        rollout_id: str,
        evaluation: dict[str, Any],
        actor: str,
        correlation_id: str,
        reason_code: str = "",  # "" in events stored before decisions carried codes
        at: str = "",
    ) -> None:
        self._end(RolloutState.ROLLED_BACK)

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
