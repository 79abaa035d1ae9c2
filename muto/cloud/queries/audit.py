"""The audit timeline (the audit view): what happened, filtered, in log order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

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
        since: datetime | None = None,
        until: datetime | None = None,
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
        if since is not None:
            query = query.where(since_clause(t.c.at, since))
        if until is not None:
            query = query.where(until_clause(t.c.at, until))
        with self.views.store.reading() as s:
            found = rows(s.execute(query.order_by(t.c.position).limit(limit)))
        return [audit_entry(r) for r in found]


def stamp(at: datetime) -> str:
    """`at` written as the audit view writes its event times (projections/audit.py: the
    event's timestamp in UTC, `isoformat()`): "2026-12-05T16:07:01.250000+00:00", or
    without the fraction when it is zero. Out of datetime's range once in UTC (a day
    from either end), the range's end: beyond every stored time."""
    try:
        utc = at.astimezone(UTC)
    except OverflowError:
        utc = (datetime.min if at.year == 1 else datetime.max).replace(tzinfo=UTC)
    return utc.isoformat()


# The bounds compare the indexed text as times (the index still serves them). The text
# is fixed-width up to the second (19 characters); then comes "+00:00", or a fraction
# first. How "+" and "." order is the database's collation's choice ('+' < '.' in C and
# SQLite, '.' < '+' in PostgreSQL's ICU collations), so no outcome below depends on it:
# a bare second ("…T16:07:01") is a prefix of every time in that second, and the time
# with no fraction in the bound's second is decided by equality.


def since_clause(at: ColumnElement[str], since: datetime) -> ColumnElement[bool]:
    """`at` (the view's text) is `since` or later."""
    text = stamp(since)
    second, fraction = text[:19], text[19:-6]  # fraction: "" or ".250000"
    if not fraction:
        return at >= second  # the whole second and after
    return and_(at >= second + fraction, at != second + "+00:00")


def until_clause(at: ColumnElement[str], until: datetime) -> ColumnElement[bool]:
    """`at` (the view's text) is `until` or earlier."""
    text = stamp(until)
    second, fraction = text[:19], text[19:-6]
    whole = second + "+00:00"  # the second itself, with no fraction
    if not fraction:
        return or_(at < second, at == whole)
    return or_(at <= text, at == whole)


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
