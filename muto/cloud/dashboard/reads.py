"""What the pages read that the API's queries do not already answer: the fleet filtered
by status and reason code with counts by status, and a vehicle's timeline (its own
events and those of the rollouts that targeted it). Views only, never the event store."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from muto.cloud.queries import VEHICLE_FIELDS, Queries
from muto.domain.selectors import Selector
from muto.projections.store import rows

SHOWN = 500  # vehicles listed on the fleet page; the counts cover all of them


@dataclass(frozen=True)
class Fleet:
    vehicles: list[dict[str, Any]]  # the first SHOWN that match every filter
    matching: int  # how many match every filter
    by_status: dict[str, int]  # among the selected vehicles (selector only)
    by_presence: dict[str, int]
    by_reason: dict[str, int]


def fleet(
    queries: Queries, selector: Selector | None, status: str | None, reason: str | None
) -> Fleet:
    vehicles = queries.views.inventory.vehicles
    selected = queries._selected(selector).subquery()
    query = (
        select(vehicles)
        .where(vehicles.c.vehicle_id.in_(select(selected.c.vehicle_id)))
        .order_by(vehicles.c.vehicle_id)
    )
    with queries.views.store.reading() as s:
        found = rows(s.execute(query))
    by_status = Counter(r["last_status"] or "none" for r in found)
    by_presence = Counter(r["presence"] or "unknown" for r in found)
    by_reason = Counter(code for r in found for code in r["last_reason_codes"] or ())
    matching = [
        r
        for r in found
        if (status is None or (r["last_status"] or "none") == status)
        and (reason is None or reason in (r["last_reason_codes"] or ()))
    ]
    shown = [{VEHICLE_FIELDS[k]: v for k, v in r.items() if k in VEHICLE_FIELDS} for r in matching]
    return Fleet(shown[:SHOWN], len(matching), dict(by_status), dict(by_presence), dict(by_reason))


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
) -> list[dict[str, Any]]:
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
    return list(reversed(found))


def audit_page(
    queries: Queries,
    before: int | None,
    vehicle_id: str | None = None,
    rollout_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
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
        return rows(s.execute(query.order_by(t.c.position.desc()).limit(limit)))
