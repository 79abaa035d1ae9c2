"""The audit timeline (the audit view): what happened, filtered, in log order."""

from __future__ import annotations

from typing import Any

from muto.cloud.api.schema import AuditEntry
from muto.projections import Views
from muto.projections.store import rows


class AuditReads:
    views: Views

    def audit(
        self,
        *,
        vehicle_id: str | None = None,
        rollout_id: str | None = None,
        correlation_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: int = 0,
        limit: int = 200,
    ) -> list[AuditEntry]:
        t = self.views.audit.timeline
        query = t.select().where(t.c.position > after)
        for column, value in (
            (t.c.vehicle_id, vehicle_id),
            (t.c.rollout_id, rollout_id),
            (t.c.correlation_id, correlation_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if since:
            query = query.where(t.c.at >= since)
        if until:
            query = query.where(t.c.at <= until)
        with self.views.store.reading() as s:
            found = rows(s.execute(query.order_by(t.c.position).limit(limit)))
        return [audit_entry(r) for r in found]


def audit_entry(r: dict[str, Any]) -> AuditEntry:
    """The API's audit entry from a row of the audit view (the dashboard shows the same)."""
    return AuditEntry(
        position=r["position"],
        at=r["at"],
        event_type=r["event_type"],
        vehicle_id=r["vehicle_id"],
        rollout_id=r["rollout_id"],
        correlation_id=r["correlation_id"],
        actor=r["actor"],
        data=r["data"],
    )
