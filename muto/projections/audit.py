"""Audit timeline: every event, with who caused it and why, filterable by vehicle,
rollout, correlation id and time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table
from sqlalchemy.orm import Session

from muto.projections.base import Projection, Update, event_data, event_type


def _plain(value: Any) -> Any:
    """Event fields as JSON-ready builtins (datetimes, UUIDs, enums become strings)."""
    return msgspec.to_builtins(value, builtin_types=None, str_keys=True)


class AuditTimeline(Projection):
    name = "audit"

    def define(self, metadata: MetaData) -> list[Table]:
        self.timeline = Table(
            "view_audit",
            metadata,
            Column("position", Integer, primary_key=True, autoincrement=False),
            Column("at", String(40), nullable=False, index=True),
            Column("event_type", String(64), nullable=False),
            Column("aggregate_id", String(36), nullable=False),
            Column("aggregate_version", Integer, nullable=False),
            Column("vehicle_id", String(128), index=True),
            Column("rollout_id", String(128), index=True),
            Column("correlation_id", String(128), index=True),
            Column("actor", String(128)),
            Column("data", JSON, nullable=False),
        )
        self._insert = self.timeline.insert()
        self._pending: list[dict[str, Any]] = []
        return [self.timeline]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {}

    def apply(self, session: Session, event: object, position: int) -> None:
        data = _plain(event_data(event))
        at: datetime = getattr(event, "timestamp")  # noqa: B009 - every event has one
        rollout_id = data.get("rollout_id") or (data.get("assignment") or {}).get("rolloutId")
        self._pending.append(
            {
                "position": position,
                "at": at.isoformat(),
                "event_type": event_type(event),
                "aggregate_id": str(getattr(event, "originator_id")),  # noqa: B009
                "aggregate_version": getattr(event, "originator_version"),  # noqa: B009
                "vehicle_id": data.get("vehicle_id"),
                "rollout_id": rollout_id,
                "correlation_id": data.get("correlation_id"),
                "actor": data.get("actor"),
                "data": data,
            }
        )

    def discard(self) -> None:
        self._pending = []

    def flush(self, session: Session) -> None:
        """Insert-only: the batch's rows go in one executemany."""
        if self._pending:
            session.connection().execute(self._insert, self._pending)
            self._pending = []
