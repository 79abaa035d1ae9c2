"""What stored events carry: the typed payloads of the control plane's domain events.

An event's own fields are declared by its aggregate method's signature (muto/domain/model);
the structured values inside them are these Structs. Their JSON is exactly the camelCase
dicts stored before they were typed (2026-12), so old and new events read alike
(tests/integration/test_event_log_v1.py).

Stored payloads are not wire payloads: they accept what was once valid (no unknown-field
rejection, no patterns), so that tightening a wire contract never makes a stored event
unreadable. A field that changes meaning or shape gets a new `class_version` on its event
class and an `upcast_vN_vN+1` there (docs/event-store.md).

Module path stable: the audit and the projections read these by attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from muto.domain.desired import (
    AgentConfig,
    DesiredStateRequest,
    Envelope,
    Policy,
    RolloutRef,
    RunNothing,
    StackRef,
    Target,
)
from muto.domain.release import release_key
from muto.domain.report_order import ReportPlace, beyond_utc
from muto.domain.reports import ReconcileReport
from muto.domain.rollout_rules import Evaluation
from muto.domain.wire import to_builtins


class Stored(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of stored payloads: camelCase keys, as they were stored as dicts."""


def merge_labels(current: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """The one rule for label and attribute changes (a vehicle PATCH): a value sets the
    key, None removes it."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# -- Vehicle.DesiredStateAssigned -------------------------------------------------------


class StoredRequest(Stored, frozen=True, kw_only=True):
    """A revision's request as stored (DesiredState.Created): a desired-state request, or
    one that says "run nothing" (`stack` None)."""

    target: Target
    stack: StackRef | None = None
    policy: Policy = Policy()
    rollout: RolloutRef | None = None
    agent_config: AgentConfig = AgentConfig()
    correlation_id: str | None = None
    ttl_sec: int

    @classmethod
    def of(cls, request: DesiredStateRequest | RunNothing) -> StoredRequest:
        return msgspec.convert(to_builtins(request), cls)


class DesiredAssignment(Stored, frozen=True, kw_only=True):
    """One vehicle's desired state, as signed for it. `release_key` and
    `manifest_digest` None: the revision says "run nothing"."""

    revision: str
    release_key: str | None
    manifest_digest: str | None
    rollout_id: str | None = None
    phase: str | None = None  # canary, wave, rollback (rollouts only)
    correlation_id: str
    envelope: Envelope
    document_digest: str
    issued_at: str
    expires_at: str


# -- Vehicle.ReconcileReported ----------------------------------------------------------


class RunningStack(Stored, frozen=True, kw_only=True):
    name: str
    version: str
    manifest_digest: str | None = None

    @property
    def key(self) -> str:
        """`stack@version`, the release key (muto.domain.release.release_key)."""
        return release_key(self.name, self.version)


class ReportTimings(Stored, frozen=True, kw_only=True):
    apply_sec: float | None = None
    readiness_sec: float | None = None


class StoredReconcile(Stored, frozen=True, kw_only=True):
    """A reconcile report as recorded (muto.domain.reports.ReconcileReport's fields)."""

    schema: str
    report_id: str
    vehicle_id: str
    desired_state_revision: str | None = None
    sequence: int | None = None
    status: str
    reason_codes: list[str] = []
    running: RunningStack | None = None
    timings: ReportTimings = ReportTimings()
    observed_at: str  # ISO 8601, as the vehicle said (untrusted clock)
    journal: ReportPlace | None = None

    def __post_init__(self) -> None:
        # A time whose UTC value no datetime holds (stored before the wire refused it)
        # stopped the views: refused here, so that the codec's slow path reads it as
        # the nearest one (Vehicle.ReconcileReported.repair).
        if beyond_utc(self.observed_at) is not None:
            raise ValueError(f"observedAt {self.observed_at} is beyond what UTC can hold")

    @classmethod
    def of(cls, report: ReconcileReport) -> StoredReconcile:
        running = report.running
        timings = report.timings
        return cls(
            schema=report.schema,
            report_id=report.report_id,
            vehicle_id=report.vehicle_id,
            desired_state_revision=report.desired_state_revision,
            sequence=report.sequence,
            status=str(report.status),
            reason_codes=[str(code) for code in report.reason_codes],
            running=None
            if running is None
            else RunningStack(
                name=running.name, version=running.version, manifest_digest=running.manifest_digest
            ),
            timings=ReportTimings(apply_sec=timings.apply_sec, readiness_sec=timings.readiness_sec),
            observed_at=to_builtins(report.observed_at),
            journal=report.journal,
        )


# -- Vehicle.HealthChanged --------------------------------------------------------------


class HealthSummary(Stored, frozen=True, kw_only=True, omit_defaults=True):
    """omit_defaults: `journal` came later; a transition without one (stored before it,
    or from an agent before it) encodes as it was stored, so old logs rebuild the same
    views (tests/integration/test_event_log_v1.py)."""

    report_id: str
    reason_codes: list[str]
    observed_at: str
    journal: ReportPlace | None = None


# -- Rollout ----------------------------------------------------------------------------


class RolloutPolicy(Stored, frozen=True, kw_only=True):
    """What every desired state of a rollout carries besides its release."""

    policy: Policy = Policy()
    agent_config: AgentConfig = AgentConfig()


class GateEvaluation(Stored, frozen=True, kw_only=True):
    """A gate's inputs and verdict (muto.domain.rollout_rules.Evaluation), as recorded in
    a decision event. Fields added later have defaults: older decisions lack them.
    `converged_pct` is None when no member was counted (decisions stored before it could
    be None say 100.0 there: rollout_rules.stored_share reads both)."""

    verdict: str
    targeted: int
    converged: int
    deferred: int
    failed: int
    counted: int = 0
    converged_pct: float | None
    threshold_pct: float
    deadline_passed: bool = False
    reason_codes: list[str] = []
    deferred_by: dict[str, int] = {}
    failed_by: dict[str, int] = {}
    tripped_by: dict[str, int] = {}

    @classmethod
    def of(cls, evaluation: Evaluation) -> GateEvaluation:
        return msgspec.convert(to_builtins(evaluation), cls)


# -- IdempotencyKey ---------------------------------------------------------------------


class KeyUse(Stored, frozen=True, kw_only=True):
    """One use of a client's Idempotency-Key (IdempotencyKey.Used / Reused): the request
    it came with and the answer that request was given, so that a resend of it is
    answered the same without a second write. Who sent it is the event's `actor`."""

    request: str  # sha256 of the method, the path and the decoded body (canonical JSON)
    used_at: str  # ISO 8601, the cloud's clock: the key is honoured for a while after
    status: int  # the answer's HTTP status
    answer: dict[str, Any]  # the answer's `data` (never a secret: docs/api.md)


def plain(payload: Any) -> Any:
    """A payload as JSON-ready builtins (for a view's JSON column)."""
    return to_builtins(payload)
