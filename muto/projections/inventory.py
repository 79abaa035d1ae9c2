"""Inventory: one row per vehicle (labels, presence, running release, last reconcile
status and reason codes, health and its reason codes) and a label index for selector
queries.

The last reconcile report is the vehicle's newest by its place in the agent's journal
(muto/domain/report_order.py), not the last stored and never by the vehicle's clock: a
late or re-delivered report never moves the view back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from sqlalchemy import JSON, BigInteger, Column, Index, Integer, MetaData, String, Table
from sqlalchemy.orm import Session

from muto.domain.events import DesiredAssignment, StoredReconcile, merge_labels
from muto.domain.report_order import ReportLedger, admit_stored
from muto.projections.base import Announcer, Projection, Update, event_type
from muto.projections.rows import Rows


def _iso(event: Any) -> str:
    return str(event.timestamp.isoformat())


def shown_after(row: dict[str, Any], report: StoredReconcile) -> ReportLedger | None:
    """The vehicle's report ledger once `report` (a stored report) is shown, or None
    when it is not the vehicle's newest. The row keeps the ledger's incarnation and
    number in columns (the in-order case) and the rest in report_ledger. The ledger is
    kept with the row for the rest of the batch (a vehicle's next legacy report reads
    it without decoding the column again)."""
    ledger = row.get(_LEDGER)
    if ledger is None:
        ledger = row[_LEDGER] = msgspec.convert(
            {**(Rows.parsed(row, "report_ledger") or {}), "incarnation": row["report_incarnation"],
             "number": row["report_number"] or 0},
            ReportLedger,
        )  # fmt: skip
    shown = admit_stored(ledger, report.journal, report.sequence, report.observed_at)
    if shown is not None:  # kept as the columns will say it (no incarnation: number 0)
        row[_LEDGER] = shown if shown.incarnation is not None or not shown.number else (
            msgspec.structs.replace(shown, number=0)
        )  # fmt: skip
    return shown


# The row's report ledger as a struct, while a batch holds the row (not a column).
_LEDGER = "__ledger"


class Inventory(Projection):
    """Events are buffered by `apply` and projected at `flush`, once per batch: the
    batch's vehicle rows are read in one SELECT, changed in memory in log order, and
    written back with one statement per kind of change (see rows.py)."""

    name = "inventory"

    def define(self, metadata: MetaData) -> list[Table]:
        self.vehicles = Table(
            "view_vehicles",
            metadata,
            Column("vehicle_id", String(128), primary_key=True),
            Column("labels", JSON, nullable=False),
            Column("attributes", JSON, nullable=False),
            Column("version", Integer, nullable=False),
            Column("sequence", Integer, nullable=False),
            Column("desired_revision", String(64)),
            Column("desired_release", String(300)),
            Column("rollout_id", String(128)),
            Column("running_release", String(300)),
            Column("last_status", String(32)),
            Column("last_reason_codes", JSON, nullable=False),
            Column("last_report_at", String(40)),
            # Where the report shown sits in its agent's journal, and what else places
            # the next one (legacy key, retired incarnations): report_order.py.
            Column("report_incarnation", String(128)),
            Column("report_number", BigInteger),
            Column("report_ledger", JSON),
            Column("health", String(32)),
            # Why: the reason codes of the health transition shown (a transition is a
            # change of status or of codes, so these are the last report's). Written
            # with `health`, in the same row and flush: no query of its own.
            Column("health_reason_codes", JSON, nullable=False),
            Column("presence", String(16)),
            Column("presence_at", String(40)),
            Column("registered_at", String(40), nullable=False),
            Column("updated_at", String(40), nullable=False),
        )
        self.labels = Table(
            "view_vehicle_labels",
            metadata,
            Column("vehicle_id", String(128), primary_key=True),
            Column("key", String(128), primary_key=True),
            Column("value", String(256), nullable=False),
            Index("ix_view_vehicle_labels_kv", "key", "value"),
        )
        self.vehicle_rows = Rows(self.vehicles, "vehicle_id")
        self.label_rows = Rows(self.labels, "vehicle_id")
        self.health_changed = Announcer("health-changed")  # each vehicle id, after commit
        self._pending: list[Any] = []
        self._steps = self.steps
        return [self.vehicles, self.labels]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {}  # projected at flush, by `steps`

    @property
    def steps(self) -> dict[str, Callable[[_Batch, Any], None]]:
        return {
            "Vehicle.Registered": self._registered,
            "Vehicle.Updated": self._updated,
            "Vehicle.DesiredStateAssigned": self._assigned,
            "Vehicle.ReconcileReported": self._reported,
            "Vehicle.HealthChanged": self._health,
            "Vehicle.PresenceChanged": self._presence,
        }

    @property
    def reads(self) -> frozenset[str]:
        return frozenset(self._steps)

    def apply(self, session: Session, event: object, position: int) -> None:
        if event_type(event) in self._steps:
            self._pending.append(event)

    def discard(self) -> None:
        self._pending = []
        super().discard()

    def flush(self, session: Session) -> None:
        events, self._pending = self._pending, []
        if not events:
            return
        batch = _Batch(self.vehicle_rows.load(session, list({e.vehicle_id for e in events})))
        steps = self._steps
        for event in events:
            steps[type(event).__qualname__](batch, event)  # event_type, inlined: per event
        batch.settle()
        self.vehicle_rows.insert(session, [batch.rows[v] for v in batch.new])
        self.vehicle_rows.write_changes(
            session, [(v, batch.changed[v]) for v in batch.changed if v not in batch.new]
        )
        relabelled = sorted(batch.relabelled)
        self.label_rows.delete_keys(session, [v for v in relabelled if v not in batch.new])
        self.label_rows.insert(
            session,
            [
                {"vehicle_id": v, "key": k, "value": value}
                for v in relabelled
                for k, value in batch.rows[v]["labels"].items()
            ],
        )

    # -- one event each, on the batch's rows in memory -----------------------------------

    def _registered(self, b: _Batch, e: Any) -> None:
        at = _iso(e)
        b.add(
            {
                **EMPTY_ROW,
                "vehicle_id": e.vehicle_id,
                "labels": dict(e.labels),
                "attributes": dict(e.attributes),
                "version": e.originator_version,
                "last_reason_codes": [],
                "health_reason_codes": [],
                "registered_at": at,
                "updated_at": at,
            }
        )

    def _updated(self, b: _Batch, e: Any) -> None:
        row = b.row(e.vehicle_id, "updated")
        b.touch(
            e,
            labels=merge_labels(Rows.parsed(row, "labels"), e.labels),
            attributes=merge_labels(Rows.parsed(row, "attributes"), e.attributes),
        )
        b.relabelled.add(e.vehicle_id)

    def _assigned(self, b: _Batch, e: Any) -> None:
        a: DesiredAssignment = e.assignment
        b.touch(
            e,
            sequence=e.sequence,
            desired_revision=a.revision,
            desired_release=a.release_key,
            rollout_id=a.rollout_id,
        )

    def _reported(self, b: _Batch, e: Any) -> None:
        """The version always moves; the report's fields only when it is the newest."""
        r: StoredReconcile = e.report
        row = b.row(e.vehicle_id, "reported")
        place = r.journal
        number = row["report_number"]
        if (
            place is not None
            and row["report_incarnation"] == place.incarnation
            and number is not None
            and number < place.number
        ):  # the common case: the next report of the incarnation shown
            ledger = row.get(_LEDGER)
            if ledger is not None:  # kept by an earlier report of the batch: its number moved
                row[_LEDGER] = msgspec.structs.replace(ledger, number=place.number)
            b.touch(e, report_number=place.number)
            b.shown[e.vehicle_id] = r
            return
        ledger = shown_after(row, r)
        if ledger is None:
            b.touch(e)
            return
        b.touch(
            e,
            report_incarnation=ledger.incarnation,
            report_number=ledger.number if ledger.incarnation is not None else None,
        )
        b.shown[e.vehicle_id] = r
        b.ledgers[e.vehicle_id] = ledger

    @property
    def announcers(self) -> list[Announcer]:
        return [self.health_changed]

    def _health(self, b: _Batch, e: Any) -> None:
        self.health_changed.note(e.vehicle_id)
        b.touch(e, health=e.status, health_reason_codes=list(e.report.reason_codes))

    def _presence(self, b: _Batch, e: Any) -> None:
        b.touch(e, presence=e.state, presence_at=e.at or _iso(e))


def _shown(r: StoredReconcile) -> dict[str, Any]:
    """The columns a report sets when it is the vehicle's newest. `running_release` is
    what it says runs; null: nothing (a vehicle told to run nothing, or whose rollback
    found no release to go back to)."""
    return {
        "last_status": r.status,
        "last_reason_codes": list(r.reason_codes),
        "last_report_at": r.observed_at,
        "running_release": r.running.key if r.running is not None else None,
    }


# A registered vehicle's columns before anything else happened to it.
EMPTY_ROW: dict[str, Any] = {
    "sequence": 0,
    "desired_revision": None,
    "desired_release": None,
    "rollout_id": None,
    "running_release": None,
    "last_status": None,
    "last_report_at": None,
    "report_incarnation": None,
    "report_number": None,
    "report_ledger": None,
    "health": None,
    "presence": None,
    "presence_at": None,
}


class _Batch:
    """The vehicle rows one batch touches, changed in memory in log order."""

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows = rows
        self.new: list[str] = []  # registered in this batch: inserted whole
        self.changed: dict[str, dict[str, Any]] = {}  # vehicle id -> columns to update
        self.relabelled: set[str] = set()  # label index rows to replace
        self.latest: dict[str, Any] = {}  # vehicle id -> the last event that touched it
        # The last report shown and the last ledger kept, per vehicle: their columns are
        # built once per vehicle by `settle` (a vehicle sends several reports a batch
        # during catch-up). No event of the batch reads the shown columns; a report that
        # needs the ledger reads the row's `_LEDGER`, which always holds it once a
        # report of the batch changed it.
        self.shown: dict[str, StoredReconcile] = {}
        self.ledgers: dict[str, ReportLedger] = {}

    def add(self, row: dict[str, Any]) -> None:
        vehicle_id = row["vehicle_id"]
        self.rows[vehicle_id] = row
        self.new.append(vehicle_id)
        self.relabelled.add(vehicle_id)

    def row(self, vehicle_id: str, what: str) -> dict[str, Any]:
        found = self.rows.get(vehicle_id)
        assert found is not None, f"{vehicle_id} {what} before it was registered"
        return found

    def touch(self, e: Any, **values: Any) -> None:
        """Record an event's changes to its vehicle's row; `version` and `updated_at`
        are the last such event's, set once per vehicle by `settle`."""
        vehicle_id = e.vehicle_id
        self.row(vehicle_id, "changed").update(values)
        changed = self.changed.get(vehicle_id)
        if changed is None:
            self.changed[vehicle_id] = values
        else:
            changed.update(values)
        self.latest[vehicle_id] = e

    def settle(self) -> None:
        """Each touched row's shown report and ledger, version and time of change: its
        last event's (built once per vehicle and batch, not per event)."""
        ledgers = self.ledgers
        for vehicle_id, report in self.shown.items():
            values = _shown(report)
            ledger = ledgers.get(vehicle_id)
            if ledger is not None:
                retired = msgspec.to_builtins(ledger.retired)
                values["report_ledger"] = {"legacy": ledger.legacy, "retired": retired}
            self.rows[vehicle_id].update(values)
            self.changed[vehicle_id].update(values)
        for vehicle_id, e in self.latest.items():
            values = {"version": e.originator_version, "updated_at": _iso(e)}
            self.rows[vehicle_id].update(values)
            self.changed[vehicle_id].update(values)
