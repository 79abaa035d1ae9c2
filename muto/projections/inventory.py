"""Inventory: one row per vehicle (labels, presence, running release, last reconcile
status and reason codes) and a label index for selector queries.

The last reconcile report is the vehicle's newest by its place in the agent's journal
(muto/domain/report_order.py), not the last stored and never by the vehicle's clock: a
late or re-delivered report never moves the view back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, Column, Index, Integer, MetaData, String, Table, bindparam
from sqlalchemy import Update as UpdateStatement
from sqlalchemy.orm import Session

from muto.domain.report_order import ReportLedger, ReportPlace, admit, legacy_key
from muto.projections.base import Announcer, Projection, Update
from muto.projections.rows import Rows


def _iso(event: Any) -> str:
    return str(event.timestamp.isoformat())


def shown_after(row: Any, report: Mapping[str, Any]) -> ReportLedger | None:
    """The vehicle's report ledger once `report` (a stored report's dict) is shown, or
    None when it is not the vehicle's newest. The row keeps the ledger's incarnation and
    number in columns (the in-order case is one UPDATE) and the rest in report_ledger."""
    place = report.get("journal")
    ledger = msgspec.convert(
        {**(row.report_ledger or {}), "incarnation": row.report_incarnation,
         "number": row.report_number or 0},
        ReportLedger,
    )  # fmt: skip
    return admit(
        ledger,
        msgspec.convert(place, ReportPlace) if place is not None else None,
        legacy_key(report.get("sequence"), datetime.fromisoformat(report["observedAt"])),
    )


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
            # Where the report shown sits in its agent's journal, and what else places
            # the next one (legacy key, retired incarnations): report_order.py.
            Column("report_incarnation", String(128)),
            Column("report_number", Integer),
            Column("report_ledger", JSON),
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
        self._in_order = self._in_order_statement()
        self.health_changed = Announcer("health-changed")  # each vehicle id, after commit
        return [self.vehicles, self.labels]

    def _in_order_statement(self) -> UpdateStatement:
        """The common case in one UPDATE: the next number of the incarnation shown."""
        c = self.vehicles.c
        return (
            self.vehicles.update()
            .where(
                c.vehicle_id == bindparam("b_vehicle"),
                c.report_incarnation == bindparam("b_incarnation"),
                c.report_number < bindparam("b_number"),
            )
            .values(
                version=bindparam("b_version"),
                updated_at=bindparam("b_updated_at"),
                last_status=bindparam("b_status"),
                last_reason_codes=bindparam("b_codes", type_=JSON),
                last_report_at=bindparam("b_at"),
                report_number=bindparam("b_number"),
                # What the newest report says runs; null: nothing (a vehicle told to
                # run nothing, or whose rollback found no release to go back to).
                running_release=bindparam("b_running", type_=String),
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
        """The version always moves; the report's fields only when it is the newest."""
        r = e.report
        running = r.get("running")
        release = f"{running['name']}@{running['version']}" if running else None
        place = r.get("journal")
        if place is not None:
            moved = s.connection().execute(
                self._in_order,
                {
                    "b_vehicle": e.vehicle_id,
                    "b_incarnation": place["incarnation"],
                    "b_number": place["number"],
                    "b_version": e.originator_version,
                    "b_updated_at": _iso(e),
                    "b_status": r["status"],
                    "b_codes": r.get("reasonCodes", []),
                    "b_at": r["observedAt"],
                    "b_running": release,
                },
            )
            if moved.rowcount == 1:
                return
        row = self.vehicle_rows.get(s, vehicle_id=e.vehicle_id)
        assert row is not None, f"{e.vehicle_id} reported before it was registered"
        ledger = shown_after(row, r)
        if ledger is None:
            self._touch(s, e)
            return
        shown: dict[str, Any] = {
            "last_status": r["status"],
            "last_reason_codes": r.get("reasonCodes", []),
            "last_report_at": r["observedAt"],
            "report_incarnation": ledger.incarnation,
            "report_number": ledger.number if ledger.incarnation is not None else None,
            "report_ledger": {
                "legacy": ledger.legacy,
                "retired": msgspec.to_builtins(ledger.retired),
            },
        }
        shown["running_release"] = release
        self._touch(s, e, **shown)

    @property
    def announcers(self) -> list[Announcer]:
        return [self.health_changed]

    def _health(self, s: Session, e: Any, _: int) -> None:
        self.health_changed.note(e.vehicle_id)
        self._touch(s, e, health=e.status)

    def _presence(self, s: Session, e: Any, _: int) -> None:
        self._touch(s, e, presence=e.state, presence_at=e.at or _iso(e))
