"""Rollout: canary (one vehicle per region-model) then one wave, with gates.

States: canary -> wave -> completed, or canary -> aborted (canary gate failed, canaries
rolled back), wave -> rolled_back (wave gate failed, or an operator rollback).
`paused` is orthogonal: while paused no new assignment is made.

Every decision is an event carrying its inputs (counts, thresholds, reason codes), so an
auditor can see why it happened.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.model import stable_id


class RolloutState(StrEnum):
    CANARY = "canary"
    WAVE = "wave"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


FINAL_STATES = frozenset({RolloutState.COMPLETED, RolloutState.ABORTED, RolloutState.ROLLED_BACK})


# A rollback ends these states; an aborted rollout stays aborted (its story is the canary).
ROLLBACK_ENDS = frozenset({RolloutState.CANARY, RolloutState.WAVE, RolloutState.COMPLETED})


class RolloutStateError(ValueError):
    """A command that the rollout's current state does not allow (HTTP 409)."""


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

    def pass_canary(self, evaluation: dict[str, Any], actor: str, correlation_id: str) -> None:
        self._require(RolloutState.CANARY)
        self._canary_gate_passed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            actor=actor,
            correlation_id=correlation_id,
        )

    def fail_canary(self, evaluation: dict[str, Any], actor: str, correlation_id: str) -> None:
        self._require(RolloutState.CANARY)
        self._canary_gate_failed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            actor=actor,
            correlation_id=correlation_id,
        )

    def pass_wave(self, evaluation: dict[str, Any], actor: str, correlation_id: str) -> None:
        self._require(RolloutState.WAVE)
        self._wave_gate_passed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            actor=actor,
            correlation_id=correlation_id,
        )

    def fail_wave(self, evaluation: dict[str, Any], actor: str, correlation_id: str) -> None:
        self._require(RolloutState.WAVE)
        self._wave_gate_failed(
            rollout_id=self.rollout_id,
            evaluation=evaluation,
            actor=actor,
            correlation_id=correlation_id,
        )

    def pause(self, actor: str, correlation_id: str) -> None:
        self._require(RolloutState.CANARY, RolloutState.WAVE)
        if not self.paused:
            self._paused(rollout_id=self.rollout_id, actor=actor, correlation_id=correlation_id)

    def resume(self, actor: str, correlation_id: str) -> None:
        self._require(RolloutState.CANARY, RolloutState.WAVE)
        if self.paused:
            self._resumed(rollout_id=self.rollout_id, actor=actor, correlation_id=correlation_id)

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

    @event("CanaryGatePassed")
    def _canary_gate_passed(
        self, rollout_id: str, evaluation: dict[str, Any], actor: str, correlation_id: str
    ) -> None:
        self.state = RolloutState.WAVE.value

    @event("CanaryGateFailed")
    def _canary_gate_failed(
        self, rollout_id: str, evaluation: dict[str, Any], actor: str, correlation_id: str
    ) -> None:
        self.state = RolloutState.ABORTED.value

    @event("WaveGatePassed")
    def _wave_gate_passed(
        self, rollout_id: str, evaluation: dict[str, Any], actor: str, correlation_id: str
    ) -> None:
        self.state = RolloutState.COMPLETED.value

    @event("WaveGateFailed")
    def _wave_gate_failed(
        self, rollout_id: str, evaluation: dict[str, Any], actor: str, correlation_id: str
    ) -> None:
        self.state = RolloutState.ROLLED_BACK.value

    @event("Paused")
    def _paused(self, rollout_id: str, actor: str, correlation_id: str) -> None:
        self.paused = True

    @event("Resumed")
    def _resumed(self, rollout_id: str, actor: str, correlation_id: str) -> None:
        self.paused = False

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
            self.state = RolloutState.ROLLED_BACK.value
