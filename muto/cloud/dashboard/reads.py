"""What the pages read that the API's queries do not already answer: the fleet filtered
by status and reason code with counts by status, and a vehicle's timeline (its own
events and those of the rollouts that targeted it). Views only, never the event store."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, cast, func, or_, select

from muto.cloud.api.schema import AuditEntry, VehicleView
from muto.cloud.queries import Queries, audit_entry, vehicle_view
from muto.domain.selectors import Selector
from muto.projections.store import rows

SHOWN = 500  # vehicles listed on the fleet page; the counts cover all of them
# What the fleet's presence filter and counts can say (`unknown`: never seen on MQTT;
# `stale`: online, but silent for three heartbeats).
PRESENCES = ("online", "stale", "offline", "unknown")


@dataclass(frozen=True)
class Counts:
    by_status: dict[str, int]  # `none`: no reconcile report yet
    by_presence: dict[str, int]  # `unknown`: never seen on MQTT; `stale`: online, silent
    by_reason: dict[str, int]  # vehicles whose last report carries the code


@dataclass(frozen=True)
class Fleet:
    vehicles: list[VehicleView]  # the first SHOWN that match every filter
    matching: int  # how many match every filter
    counts: Counts  # among the selected vehicles (selector only)


def _no_codes(column: Any) -> Any:
    """An empty reason-code list, as stored (JSON text `[]` on SQLite and PostgreSQL)."""
    return cast(column, String) == "[]"


def counts(queries: Queries, selector: Selector | None = None) -> Counts:
    """Counts by status, presence and reason code, in SQL (a few GROUP BYs), reading
    the reason codes of only the vehicles that have some. The fleet page and the
    metrics collector both count this way."""
    v = queries.views.inventory.vehicles
    selected = v.c.vehicle_id.in_(select(queries.selected(selector).subquery().c.vehicle_id))
    with queries.views.store.reading() as s:
        by_status = s.execute(
            select(v.c.last_status, func.count()).where(selected).group_by(v.c.last_status)
        ).all()
        by_presence = s.execute(
            select(v.c.presence, func.count()).where(selected).group_by(v.c.presence)
        ).all()
        codes = s.execute(
            select(v.c.last_reason_codes).where(selected, ~_no_codes(v.c.last_reason_codes))
        ).scalars()
        by_reason = Counter(code for found in codes for code in found or ())
    presence = {state or "unknown": n for state, n in by_presence}
    stale = queries.stale(selector)
    if stale:
        presence["online"] -= stale
        presence["stale"] = stale
    return Counts({status or "none": n for status, n in by_status}, presence, dict(by_reason))


def fleet(
    queries: Queries,
    selector: Selector | None,
    status: str | None,
    reason: str | None,
    presence: str | None = None,
) -> Fleet:
    """`reason` must be a reason code and `presence` one of PRESENCES (checked by the
    caller): the code is matched inside the stored JSON list as the quoted word; online
    and stale are told apart as each vehicle's `presence` is (judged now, not stored)."""
    v = queries.views.inventory.vehicles
    query = queries.vehicle_rows.where(
        v.c.vehicle_id.in_(select(queries.selected(selector).subquery().c.vehicle_id))
    )
    if status == "none":
        query = query.where(v.c.last_status.is_(None))
    elif status is not None:
        query = query.where(v.c.last_status == status)
    if reason is not None:
        query = query.where(cast(v.c.last_reason_codes, String).contains(f'"{reason}"'))
    if presence == "unknown":
        query = query.where(v.c.presence.is_(None))
    elif presence is not None:
        query = query.where(v.c.presence == ("online" if presence == "stale" else presence))
    ordered = query.order_by(v.c.vehicle_id)
    with queries.views.store.reading() as s:
        if presence in ("online", "stale"):  # as `Queries.stale` counts: every online row
            judged = (vehicle_view(r) for r in rows(s.execute(ordered)))
            views = [view for view in judged if view.presence == presence]
            matching = len(views)
        else:
            matching = s.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            views = [vehicle_view(r) for r in rows(s.execute(ordered.limit(SHOWN)))]
    return Fleet(views[:SHOWN], int(matching), counts(queries, selector))


def vehicle_rollouts(queries: Queries, vehicle_id: str) -> list[dict[str, Any]]:
    r, m = queries.views.rollouts.rollouts, queries.views.rollouts.vehicles
    with queries.views.store.reading() as s:
        return rows(
            s.execute(
                select(m.c.rollout_id, m.c.phase, m.c.status, m.c.reason_codes, r.c.state)
                .join(r, r.c.rollout_id == m.c.rollout_id)
                .where(m.c.vehicle_id == vehicle_id)
                .order_by(r.c.started_at.desc())
            )
        )


def vehicle_timeline(
    queries: Queries, vehicle_id: str, rollout_ids: list[str], limit: int = 200
) -> list[AuditEntry]:
    """The newest `limit` entries of the vehicle's story, oldest first: what
    `muto audit explain --vehicle` tells, read from the audit view."""
    t = queries.views.audit.timeline
    concerns = t.c.vehicle_id == vehicle_id
    if rollout_ids:
        concerns = or_(
            concerns,
            (t.c.rollout_id.in_(rollout_ids)) & t.c.event_type.startswith("Rollout."),
        )
    with queries.views.store.reading() as s:
        found = rows(
            s.execute(t.select().where(concerns).order_by(t.c.position.desc()).limit(limit))
        )
    return [audit_entry(r) for r in reversed(found)]


def audit_page(
    queries: Queries,
    before: int | None,
    vehicle_id: str | None = None,
    rollout_id: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest entries first (the API pages oldest first, for exports)."""
    t = queries.views.audit.timeline
    query = t.select()
    if vehicle_id:
        query = query.where(t.c.vehicle_id == vehicle_id)
    if rollout_id:
        query = query.where(t.c.rollout_id == rollout_id)
    if before is not None:
        query = query.where(t.c.position < before)
    with queries.views.store.reading() as s:
        found = rows(s.execute(query.order_by(t.c.position.desc()).limit(limit)))
    return [audit_entry(r) for r in found]
