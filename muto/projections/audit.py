"""Audit timeline: every event, with who caused it and why, filterable by vehicle,
rollout, correlation id and time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table
from sqlalchemy.orm import Session

from muto.projections.base import (
    LogPosition,
    Projection,
    Update,
    event_data,
    event_type,
    id_text,
)
from muto.projections.rows import DriverInsert

_encode = msgspec.json.Encoder().encode


def _field(value: Any, name: str, stored_as: str) -> Any:
    """A field of a typed event's part, or of a dict (an event the codec does not type)."""
    if isinstance(value, dict):
        return value.get(stored_as)
    return getattr(value, name, None)


class AuditTimeline(Projection):
    name = "audit"

    def define(self, metadata: MetaData) -> list[Table]:
        self.timeline = Table(
            "view_audit",
            metadata,
            Column("position", LogPosition, primary_key=True, autoincrement=False),
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
        self._insert = DriverInsert(self.timeline)
        self._pending: list[tuple[Any, ...]] = []
        return [self.timeline]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {}

    def apply(self, session: Session, event: object, position: int) -> None:
        """The row in the table's column order; `data` is the event's fields encoded
        once, straight to JSON text (the same text msgspec.to_builtins then a JSON
        encoder would give, at a fraction of the cost)."""
        fields = event_data(event)
        at: datetime = getattr(event, "timestamp")  # noqa: B009 - every event has one
        rollout_id = fields.get("rollout_id") or _field(
            fields.get("assignment"), "rollout_id", "rolloutId"
        )
        self._pending.append(
            (
                position,
                at.isoformat(),
                event_type(event),
                id_text(getattr(event, "originator_id")),  # noqa: B009
                getattr(event, "originator_version"),  # noqa: B009
                fields.get("vehicle_id"),
                rollout_id,
                fields.get("correlation_id"),
                fields.get("actor"),
                _encode(fields).decode(),
            )
        )

    def discard(self) -> None:
        self._pending = []

    def flush(self, session: Session) -> None:
        """Insert-only: the batch's rows go in at once (`DriverInsert`)."""
        if self._pending:
            self._insert.write(session, self._pending)  # `data` is JSON text already
            self._pending = []
