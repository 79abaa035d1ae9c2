"""Vehicle: registration, labels, desired-state assignments, reports received.

Invariants:
- `sequence` (desired-state assignments) strictly increases per assignment: by one, or
  past the highest sequence the vehicle's reports said it took (`next_sequence`: a cloud
  restored from a backup issued less than the vehicle accepted since).
- a reconcile report id is recorded once; a re-delivered report adds no event
  (the last RECENT_REPORT_IDS ids are kept: the agent delivers its outbox in order,
  so a duplicate is never older than the reports that followed it).
- health and presence store transitions only, never repeats (a health transition: its
  status or its reason codes changed); a health report that is no news beside the last
  transition (delivered again, or said before it: report_order.health_overtaken) is none.

Events carry typed payloads (muto/domain/events.py); the aggregate keeps plain dicts, so
that its snapshots always encode (eventsourcing issues 260, 283).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.events import DesiredAssignment, HealthSummary, StoredReconcile, merge_labels
from muto.domain.model import stable_id
from muto.domain.report_order import (
    MAX_JOURNAL_NUMBER,
    ReportPlace,
    beyond_utc,
    health_overtaken,
)
from muto.domain.reports import ReconcileStatus
from muto.domain.wire import convert, to_builtins

RECENT_REPORT_IDS = 256
# A vehicle's reported sequence is believed up to this. No cloud issues one vehicle a
# billion documents, and the views store a sequence as a 32-bit integer on PostgreSQL
# (2**31 - 1; JSON's safe integers, 2**53 - 1, go further): a claim believed near that
# would leave this cloud's next documents where the views cannot store them.
MAX_BELIEVED_SEQUENCE = 2**30


def believed_sequence(status: str | None, sequence: int | None) -> int:
    """The desired-state sequence a reconcile report shows its vehicle took (0: none).
    A rejection's is not: it names a document the vehicle did not take, and one that
    did not verify under a sequence the response claimed, which anyone on the path can
    write (agent intake). Nor is one beyond MAX_BELIEVED_SEQUENCE."""
    if status == ReconcileStatus.REJECTED or not isinstance(sequence, int):
        return 0
    return sequence if 0 < sequence <= MAX_BELIEVED_SEQUENCE else 0


class Vehicle(Aggregate):
    @staticmethod
    def create_id(vehicle_id: str, **_: Any) -> UUID:
        return stable_id("vehicle", vehicle_id)

    @event("Registered")
    def __init__(
        self,
        vehicle_id: str,
        labels: dict[str, str],
        attributes: dict[str, str],
        actor: str,
        correlation_id: str,
    ) -> None:
        self.vehicle_id = vehicle_id
        self.labels = labels
        self.attributes = attributes
        self.sequence = 0
        self.reported_sequence = 0  # the highest its reports said it took (believed_sequence)
        self.reported_revision: str | None = None  # the revision they said it under
        self.assignment: dict[str, Any] | None = None
        self.previous_assignment: dict[str, Any] | None = None
        self.last_report: dict[str, Any] | None = None
        self.recent_report_ids: list[str] = []
        self.health: str | None = None
        self.health_codes: list[str] | None = None  # the last health transition's reasons
        self.health_report_id: str | None = None  # and its report (plain data: snapshots)
        self.health_place: dict[str, Any] | None = None
        self.presence: str | None = None

    # -- commands -------------------------------------------------------------------

    def update(
        self,
        labels: dict[str, str | None],
        attributes: dict[str, str | None],
        actor: str,
        correlation_id: str,
    ) -> None:
        """Merge labels/attributes; a None value removes the key."""
        self._updated(
            vehicle_id=self.vehicle_id,
            labels=labels,
            attributes=attributes,
            actor=actor,
            correlation_id=correlation_id,
        )

    def reported(self) -> int:
        """The highest desired-state sequence the vehicle's reports said it took."""
        # getattr: a snapshot taken before it lacks it; its last report knew the most then.
        known = getattr(self, "reported_sequence", None)
        if known is None:
            last = self.last_report or {}
            known = believed_sequence(last.get("status"), last.get("sequence"))
        return int(known)

    def ahead(self) -> bool:
        """Whether the vehicle took a later document than this cloud issued it: a cloud
        restored from a backup, whose documents it refuses (STALE_REVISION). Or another
        document under this cloud's own last sequence: here a sequence names one
        document (a renewal keeps its revision), so a different revision there is one
        the cloud before the restore issued, and the vehicle refuses ours as a replay."""
        reported = self.reported()
        if reported != self.sequence:
            return reported > self.sequence
        revision = getattr(self, "reported_revision", None)  # a snapshot before it: None
        current = (self.assignment or {}).get("revision")
        return None not in (revision, current) and revision != current

    def next_sequence(self) -> int:
        """The sequence of the vehicle's next desired-state document, above both what
        this cloud issued it and what the vehicle took: the one rule, for every document
        signed for it (an assignment, a renewal, a re-issue)."""
        return max(self.sequence, self.reported()) + 1

    def assign(self, assignment: DesiredAssignment, actor: str, correlation_id: str) -> int:
        """Assign desired state; returns the new per-vehicle sequence (`next_sequence`,
        which the signed document carries)."""
        sequence = self.next_sequence()
        self._assigned(
            vehicle_id=self.vehicle_id,
            sequence=sequence,
            assignment=assignment,
            actor=actor,
            correlation_id=correlation_id,
        )
        return sequence

    def record_reconcile(self, report: StoredReconcile, actor: str, correlation_id: str) -> bool:
        """Record a reconcile report; False (and no event) if it was already recorded."""
        if report.report_id in self.recent_report_ids:
            return False
        self.trigger_event(
            Vehicle.ReconcileReported,
            vehicle_id=self.vehicle_id,
            report=report,
            actor=actor,
            correlation_id=correlation_id,
        )
        return True

    def record_health(
        self, status: str, report: HealthSummary, actor: str, correlation_id: str
    ) -> bool | None:
        """Record a health transition: the status, or the reason codes that say why,
        changed. False (and no event) when both are unchanged; None (and no event) when
        the report is no news: delivered again, or said before the last transition."""
        # getattr: attributes a snapshot taken before them lacks.
        last = getattr(self, "health_place", None)
        last_place = convert(last, ReportPlace) if last is not None else None
        last_id = getattr(self, "health_report_id", None)
        if health_overtaken(last_place, last_id, report.journal, report.report_id):
            return None
        # Codes None (an older snapshot): a report with the same status is then recorded
        # once, and the views learn its codes.
        if status == self.health and report.reason_codes == getattr(self, "health_codes", None):
            return False
        self._health_changed(
            vehicle_id=self.vehicle_id,
            status=status,
            previous=self.health,
            report=report,
            actor=actor,
            correlation_id=correlation_id,
        )
        return True

    def record_presence(self, state: str, at: str | None, actor: str, correlation_id: str) -> bool:
        if state == self.presence:
            return False
        self._presence_changed(
            vehicle_id=self.vehicle_id,
            state=state,
            at=at,
            actor=actor,
            correlation_id=correlation_id,
        )
        return True

    # -- events -----------------------------------------------------------------------

    @event("Updated")
    def _updated(
        self,
        vehicle_id: str,
        labels: dict[str, str | None],
        attributes: dict[str, str | None],
        actor: str,
        correlation_id: str,
    ) -> None:
        self.labels = merge_labels(self.labels, labels)
        self.attributes = merge_labels(self.attributes, attributes)

    @event("DesiredStateAssigned")
    def _assigned(
        self,
        vehicle_id: str,
        sequence: int,
        assignment: DesiredAssignment,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.sequence = sequence
        if (self.assignment or {}).get("revision") != assignment.revision:
            # The same revision signed again (a renewal, a re-issue) is no new intent:
            # the one before it stays what a rollback looks back to.
            self.previous_assignment = self.assignment
        self.assignment = to_builtins(assignment)

    class ReconcileReported(Aggregate.Event):
        """A reconcile report received. `repair` reads one stored before a journal
        number was bounded (2026-12-04): a number beyond the views' signed 64-bit
        integer, which no agent's journal reaches, is read as no place; and one stored
        before `observedAt` was bounded: a time whose UTC value is beyond a datetime's
        range is read as the earliest or latest one (report_order.beyond_utc).

        Triggered and applied directly (`trigger_event`, `apply`), not through an
        `@event` method: every report is one, and the decorator's argument matching
        and call were a tenth of the writer's time on a batch of reports."""

        vehicle_id: str
        report: StoredReconcile
        actor: str
        correlation_id: str

        def apply(self, aggregate: Any) -> None:
            report = self.report
            taken, known = believed_sequence(report.status, report.sequence), aggregate.reported()
            if taken and taken >= known:
                aggregate.reported_sequence = taken
                aggregate.reported_revision = report.desired_state_revision
            else:  # kept (set: a snapshot from before it read it off its last report)
                aggregate.reported_sequence = known
            aggregate.last_report = to_builtins(report)
            aggregate.recent_report_ids.append(self.report.report_id)
            del aggregate.recent_report_ids[:-RECENT_REPORT_IDS]

        @staticmethod
        def repair(state: dict[str, Any]) -> str | None:
            report = state.get("report")
            if not isinstance(report, dict):
                return None
            said = []
            journal = report.get("journal")
            number = journal.get("number") if isinstance(journal, dict) else None
            if isinstance(number, int) and number > MAX_JOURNAL_NUMBER:
                report["journal"] = None
                said.append(f"journal number {number} read as no place")
            observed = report.get("observedAt")
            within = beyond_utc(observed) if isinstance(observed, str) else None
            if within is not None:
                report["observedAt"] = within
                said.append(f"observedAt {observed} read as {within}")
            return "; ".join(said) or None

    @event("HealthChanged")
    def _health_changed(
        self,
        vehicle_id: str,
        status: str,
        previous: str | None,
        report: HealthSummary,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.health = status
        self.health_codes = list(report.reason_codes)
        self.health_report_id = report.report_id
        self.health_place = to_builtins(report.journal) if report.journal is not None else None

    @event("PresenceChanged")
    def _presence_changed(
        self, vehicle_id: str, state: str, at: str | None, actor: str, correlation_id: str
    ) -> None:
        self.presence = state
