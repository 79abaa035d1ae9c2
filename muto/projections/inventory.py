"""Inventory: one row per vehicle (labels, presence, running release, last reconcile
status and reason codes) and a label index for selector queries.

The last reconcile report is the newest by (desired-state sequence, observedAt), not the
last stored: a stale report (a replay from a restored vehicle) never moves the view back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    case,
    or_,
)
from sqlalchemy import Update as UpdateStatement
from sqlalchemy.orm import Session

from muto.projections.base import Announcer, Projection, Update
from muto.projections.rows import Rows


def _iso(event: Any) -> str:
    return str(event.timestamp.isoformat())


def report_order(report: Mapping[str, Any]) -> str:
    """A string that sorts reports as the vehicle made them: by the desired-state
    sequence they answer (none first), then by when they were observed (in UTC)."""
    sequence = report.get("sequence")
    observed = datetime.fromisoformat(report["observedAt"]).astimezone(UTC)
    return f"{(sequence if sequence is not None else -1) + 1:012d}|{observed.isoformat()}"


class Inventory(Projection):
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
            Column("last_report_order", String(64)),
            Column("health", String(32)),
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
        self._report = self._report_statement()
        self.health_changed = Announcer("health-changed")  # each vehicle id, after commit
        return [self.vehicles, self.labels]

    def _report_statement(self) -> UpdateStatement:
        """One UPDATE per report: the version always moves; the report's fields only
        when it is not older than the one shown."""
        c = self.vehicles.c
        order = bindparam("order", type_=String)
        running = bindparam("running", type_=String)
        newer = or_(c.last_report_order.is_(None), c.last_report_order <= order)

        def if_newer(column: Any, value: Any, also: Any = None) -> Any:
            when = newer if also is None else and_(newer, also)
            return case((when, value), else_=column)

        return (
            self.vehicles.update()
            .where(c.vehicle_id == bindparam("vehicle"))
            .values(
                version=bindparam("version"),
                updated_at=bindparam("updated_at"),
                last_status=if_newer(c.last_status, bindparam("status", type_=String)),
                last_reason_codes=if_newer(c.last_reason_codes, bindparam("codes", type_=JSON)),
                last_report_at=if_newer(c.last_report_at, bindparam("at", type_=String)),
                last_report_order=if_newer(c.last_report_order, order),
                running_release=if_newer(c.running_release, running, running.is_not(None)),
            )
        )

    @property
    def updates(self) -> Mapping[str, Update]:
        return {
            "Vehicle.Registered": self._registered,
            "Vehicle.Updated": self._updated,
            "Vehicle.DesiredStateAssigned": self._assigned,
            "Vehicle.ReconcileReported": self._reported,
            "Vehicle.HealthChanged": self._health,
            "Vehicle.PresenceChanged": self._presence,
        }

    def _registered(self, s: Session, e: Any, _: int) -> None:
        at = _iso(e)
        self.vehicle_rows.insert(
            s,
            {
                "vehicle_id": e.vehicle_id,
                "labels": e.labels,
                "attributes": e.attributes,
                "version": e.originator_version,
                "sequence": 0,
                "last_reason_codes": [],
                "registered_at": at,
                "updated_at": at,
            },
        )
        self._index(s, e.vehicle_id, e.labels)

    def _touch(self, s: Session, e: Any, **values: Any) -> None:
        self.vehicle_rows.update(
            s,
            {"vehicle_id": e.vehicle_id},
            version=e.originator_version,
            updated_at=_iso(e),
            **values,
        )

    def _updated(self, s: Session, e: Any, _: int) -> None:
        row = self.vehicle_rows.get(s, vehicle_id=e.vehicle_id)
        assert row is not None, f"{e.vehicle_id} updated before it was registered"
        labels, attributes = dict(row.labels), dict(row.attributes)
        for target, changes in ((labels, e.labels), (attributes, e.attributes)):
            for key, value in changes.items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
        self._touch(s, e, labels=labels, attributes=attributes)
        self.label_rows.delete(s, vehicle_id=e.vehicle_id)
        self._index(s, e.vehicle_id, labels)

    def _index(self, s: Session, vehicle_id: str, labels: dict[str, str]) -> None:
        self.label_rows.insert(
            s, [{"vehicle_id": vehicle_id, "key": k, "value": v} for k, v in labels.items()]
        )

    def _assigned(self, s: Session, e: Any, _: int) -> None:
        a = e.assignment
        self._touch(
            s,
            e,
            sequence=e.sequence,
            desired_revision=a["revision"],
            desired_release=a["releaseKey"],
            rollout_id=a.get("rolloutId"),
        )

    def _reported(self, s: Session, e: Any, _: int) -> None:
        r = e.report
        running = r.get("running")
        s.connection().execute(
            self._report,
            {
                "vehicle": e.vehicle_id,
                "version": e.originator_version,
                "updated_at": _iso(e),
                "status": r["status"],
                "codes": r.get("reasonCodes", []),
                "at": r["observedAt"],
                "order": report_order(r),
                "running": f"{running['name']}@{running['version']}" if running else None,
            },
        )

    @property
    def announcers(self) -> list[Announcer]:
        return [self.health_changed]

    def _health(self, s: Session, e: Any, _: int) -> None:
        self.health_changed.note(e.vehicle_id)
        self._touch(s, e, health=e.status)

    def _presence(self, s: Session, e: Any, _: int) -> None:
        self._touch(s, e, presence=e.state, presence_at=e.at or _iso(e))
