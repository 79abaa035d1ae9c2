"""Read side: answers from the projections' SQL views, never from the event store."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import Table, and_, bindparam, func, select

from muto.cloud.api.schema import VehicleView
from muto.cloud.errors import NotFound
from muto.domain.model.rollout import ACTIVE_STATES
from muto.domain.presence import shown_presence
from muto.domain.selectors import Selector, parse_selector
from muto.projections import Views
from muto.projections.store import rows

# The API's vehicle (schema.VehicleView) names the inventory's columns: inventory
# column -> JSON field, derived from the Struct, so that the two cannot drift apart.
# `reported` is not a column (snapshots.py); the heartbeat is the heartbeats table's.
COLUMN_OF = {"last_heartbeat_at": "heard_at"}
VEHICLE_FIELDS = {
    COLUMN_OF.get(f.name, f.name): f.encode_name
    for f in msgspec.structs.fields(VehicleView)
    if f.name != "reported"
}


ACTIVE_ROLLOUT_STATES = tuple(str(state) for state in ACTIVE_STATES)
# The member statuses a phase still waits for; GET /rollouts/{id} lists them (capped).
OUTSTANDING = ("pending", "assigned", "deferred")
OUTSTANDING_SHOWN = 100


def _vehicle(row: dict[str, Any]) -> dict[str, Any]:
    """The API's vehicle: the view's public columns (bookkeeping ones stay inside), with
    its presence judged now ("stale": online, but silent for three heartbeats)."""
    vehicle = {VEHICLE_FIELDS[k]: v for k, v in row.items() if k in VEHICLE_FIELDS}
    if "presence" in vehicle:
        heard = vehicle.setdefault("lastHeartbeatAt", None) or vehicle.get("presenceAt")
        vehicle["presence"] = shown_presence(
            vehicle["presence"],
            datetime.fromisoformat(heard) if heard else None,
            row.get("heartbeat_s"),
            datetime.now(UTC),
        )
    return vehicle


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    next_cursor: str | None


class Queries:
    def __init__(self, views: Views, heartbeats: Table) -> None:
        self.views = views
        vehicles = views.inventory.vehicles
        # A vehicle row with its last heartbeat (ingest.py's table, not a projection).
        self._vehicles = select(
            vehicles, heartbeats.c.heard_at, heartbeats.c.heartbeat_s
        ).outerjoin(heartbeats, heartbeats.c.vehicle_id == vehicles.c.vehicle_id)
        latest, releases = views.desired.latest, views.releases.releases
        vehicle = latest.c.vehicle_id == bindparam("vehicle")
        self._latest = select(latest).where(vehicle)
        self._etag = select(latest.c.etag).where(vehicle)
        self._envelope = select(releases.c.envelope).where(
            releases.c.release_key == bindparam("key")
        )

    # -- vehicles -----------------------------------------------------------------------

    def _selected(self, selector: Selector | None) -> Any:
        vehicles, labels = self.views.inventory.vehicles, self.views.inventory.labels
        query = select(vehicles.c.vehicle_id)
        for key, value in selector.terms if selector else ():
            query = query.where(
                vehicles.c.vehicle_id.in_(
                    select(labels.c.vehicle_id).where(
                        and_(labels.c.key == key, labels.c.value == value)
                    )
                )
            )
        return query

    def vehicle_ids(self, selector: Selector | None) -> list[str]:
        with self.views.store.reading() as s:
            query = self._selected(selector).order_by(self.views.inventory.vehicles.c.vehicle_id)
            return [r[0] for r in s.execute(query)]

    def vehicles(
        self, selector: Selector | None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """Vehicles ordered by id; `cursor` is the last id of the previous page."""
        vehicles = self.views.inventory.vehicles
        ids = self._selected(selector).subquery()
        with self.views.store.reading() as s:
            total = s.execute(select(func.count()).select_from(ids)).scalar_one()
            query = self._vehicles.where(vehicles.c.vehicle_id.in_(select(ids.c.vehicle_id)))
            if cursor:
                query = query.where(vehicles.c.vehicle_id > cursor)
            found = rows(s.execute(query.order_by(vehicles.c.vehicle_id).limit(limit + 1)))
        more = len(found) > limit
        items = [_vehicle(r) for r in found[:limit]]
        return Page(items, total, items[-1]["vehicleId"] if more else None)

    def stale(self, selector: Selector | None) -> int:
        """How many of the selected vehicles stored as online are shown stale now (the
        same rule as each vehicle's `presence`): the counts by presence move them."""
        vehicles = self.views.inventory.vehicles
        ids = self._selected(selector).subquery()
        query = self._vehicles.where(
            vehicles.c.vehicle_id.in_(select(ids.c.vehicle_id)), vehicles.c.presence == "online"
        )
        with self.views.store.reading() as s:
            return sum(_vehicle(r)["presence"] == "stale" for r in rows(s.execute(query)))

    def vehicle(self, vehicle_id: str) -> dict[str, Any]:
        vehicles = self.views.inventory.vehicles
        with self.views.store.reading() as s:
            found = rows(s.execute(self._vehicles.where(vehicles.c.vehicle_id == vehicle_id)))
        if not found:
            raise NotFound(f"vehicle {vehicle_id!r} is not registered")
        return _vehicle(found[0])

    # -- releases -----------------------------------------------------------------------

    def release(self, stack: str, version: str) -> dict[str, Any]:
        table = self.views.releases.releases
        with self.views.store.reading() as s:
            found = rows(
                s.execute(table.select().where(table.c.release_key == f"{stack}@{version}"))
            )
        if not found:
            raise NotFound(f"release {stack}@{version} is not registered")
        return _release(found[0])

    def releases(self, stack: str | None = None) -> list[dict[str, Any]]:
        table = self.views.releases.releases
        query = table.select().order_by(table.c.stack_name, table.c.registered_at)
        if stack:
            query = query.where(table.c.stack_name == stack)
        with self.views.store.reading() as s:
            return [_release(r) for r in rows(s.execute(query))]

    # -- desired state ------------------------------------------------------------------

    def latest_desired(self, vehicle_id: str) -> dict[str, Any] | None:
        found = self.views.store.read(self._latest, {"vehicle": vehicle_id})
        return dict(found[0]._mapping) if found else None

    def desired_etag(self, vehicle_id: str) -> str | None:
        """The ETag of the vehicle's latest desired state alone: a poll answered 304
        needs nothing else (no 3 KB envelope to load and decode)."""
        found = self.views.store.read(self._etag, {"vehicle": vehicle_id})
        return str(found[0][0]) if found else None

    def release_envelope(self, release_key: str) -> dict[str, Any]:
        """Uncached: envelopes.ReleaseEnvelopes keeps them (releases are immutable)."""
        found = self.views.store.read(self._envelope, {"key": release_key})
        if not found:
            raise NotFound(f"release {release_key} is not registered")
        return dict(found[0][0])

    # -- rollouts -----------------------------------------------------------------------

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        rollouts, vehicles = self.views.rollouts.rollouts, self.views.rollouts.vehicles
        with self.views.store.reading() as s:
            found = rows(s.execute(rollouts.select().where(rollouts.c.rollout_id == rollout_id)))
            if not found:
                raise NotFound(f"rollout {rollout_id!r} does not exist")
            members = rows(
                s.execute(
                    vehicles.select()
                    .where(vehicles.c.rollout_id == rollout_id)
                    .order_by(vehicles.c.vehicle_id)
                )
            )
            r = found[0]
            waiting = self._outstanding(s, r["rollout_id"], r["state"])
            not_in = self._not_in_rollout(s, r["rollout_id"], r["selector"])
        return {
            "rolloutId": r["rollout_id"],
            "state": r["state"],
            "paused": r["paused"],
            "selector": r["selector"],
            "release": r["release_key"],
            "thresholds": r["thresholds"],
            "decisions": r["decisions"],
            "startedAt": r["started_at"],
            "updatedAt": r["updated_at"],
            "deadline": r["deadline_at"],
            "outstanding": waiting[:OUTSTANDING_SHOWN],
            "outstandingTotal": len(waiting),
            "notInRollout": not_in,
            "phases": progress(members),
            "vehicles": [
                {
                    "vehicleId": m["vehicle_id"],
                    "phase": m["phase"],
                    "revision": m["revision"],
                    "status": m["status"],
                    "reasonCodes": m["reason_codes"],
                }
                for m in members
            ],
        }

    def _outstanding(self, s: Any, rollout_id: str, state: str) -> list[dict[str, Any]]:
        """Why an active rollout waits: the members of its current phase that have not
        converged or failed, with their presence and last report."""
        phase = {"canary": "canary", "wave": "wave", "baking": "wave"}.get(state)
        if phase is None:
            return []
        m, v = self.views.rollouts.vehicles, self.views.inventory.vehicles
        found = s.execute(
            select(
                m.c.vehicle_id,
                m.c.status,
                m.c.reason_codes,
                v.c.presence,
                v.c.presence_at,
                v.c.last_status,
                v.c.last_reason_codes,
                v.c.last_report_at,
            )
            .join(v, v.c.vehicle_id == m.c.vehicle_id, isouter=True)
            .where(m.c.rollout_id == rollout_id, m.c.phase == phase, m.c.status.in_(OUTSTANDING))
            .order_by(m.c.vehicle_id)
        )
        return [
            {
                "vehicleId": row.vehicle_id,
                "status": row.status,
                "reasonCodes": row.reason_codes,
                "presence": row.presence,
                "presenceAt": row.presence_at,
                "lastStatus": row.last_status,
                "lastReasonCodes": row.last_reason_codes or [],
                "lastReportAt": row.last_report_at,
            }
            for row in found
        ]

    def _not_in_rollout(self, s: Any, rollout_id: str, selector: str) -> int:
        """Vehicles that match the selector now but are not members (membership is
        fixed at start: registered or relabelled in later)."""
        members = self.views.rollouts.vehicles
        matching = self._selected(parse_selector(selector)).where(
            self.views.inventory.vehicles.c.vehicle_id.not_in(
                select(members.c.vehicle_id).where(members.c.rollout_id == rollout_id)
            )
        )
        count: int = s.execute(select(func.count()).select_from(matching.subquery())).scalar_one()
        return count

    def rollout_exists(self, rollout_id: str) -> bool:
        table = self.views.rollouts.rollouts
        with self.views.store.reading() as s:
            found = s.execute(select(table.c.rollout_id).where(table.c.rollout_id == rollout_id))
            return found.first() is not None

    def rollout_members(self, rollout_id: str) -> list[dict[str, Any]]:
        vehicles = self.views.rollouts.vehicles
        with self.views.store.reading() as s:
            return rows(s.execute(vehicles.select().where(vehicles.c.rollout_id == rollout_id)))

    # -- audit --------------------------------------------------------------------------

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
    ) -> list[dict[str, Any]]:
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
        return [
            {
                "position": r["position"],
                "at": r["at"],
                "eventType": r["event_type"],
                "vehicleId": r["vehicle_id"],
                "rolloutId": r["rollout_id"],
                "correlationId": r["correlation_id"],
                "actor": r["actor"],
                "data": r["data"],
            }
            for r in found
        ]


def _release(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "stackName": r["stack_name"],
        "version": r["version"],
        "manifestDigest": r["manifest_digest"],
        "manifest": r["manifest"],
        "envelope": r["envelope"],
        "registeredAt": r["registered_at"],
    }


def progress(members: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase: targeted, and counts by status; deferred and failed by reason code."""
    phases: dict[str, Any] = {}
    for m in members:
        phase = phases.setdefault(
            m["phase"],
            {
                "targeted": 0,
                "pending": 0,
                "assigned": 0,
                "converged": 0,
                "deferred": 0,
                "failed": 0,
                "rolledBack": 0,
                "left": 0,
                "deferredBy": Counter(),
                "failedBy": Counter(),
            },
        )
        phase["targeted"] += 1
        status = "rolledBack" if m["status"] == "rolled_back" else m["status"]
        phase[status] += 1
        if status in ("deferred", "failed"):
            phase[f"{status}By"].update(m["reason_codes"])
    for phase in phases.values():
        phase["deferredBy"] = dict(phase["deferredBy"])
        phase["failedBy"] = dict(phase["failedBy"])
    return phases


def rollout_candidates(queries: Queries, vehicle_ids: list[str]) -> list[dict[str, Any]]:
    """Labels, presence and last status of the given vehicles, for canary selection."""
    vehicles = queries.views.inventory.vehicles
    with queries.views.store.reading() as s:
        return rows(
            s.execute(
                select(
                    vehicles.c.vehicle_id,
                    vehicles.c.labels,
                    vehicles.c.presence,
                    vehicles.c.last_status,
                ).where(vehicles.c.vehicle_id.in_(vehicle_ids))
            )
        )


def vehicles_in_active_rollouts(queries: Queries, vehicle_ids: list[str]) -> dict[str, str]:
    """vehicle id -> id of the active rollout (canary, wave, baking) that targets it
    (a member that left it is free)."""
    r, m = queries.views.rollouts.rollouts, queries.views.rollouts.vehicles
    with queries.views.store.reading() as s:
        found = s.execute(
            select(m.c.vehicle_id, m.c.rollout_id)
            .join(r, r.c.rollout_id == m.c.rollout_id)
            .where(
                r.c.state.in_(ACTIVE_ROLLOUT_STATES),
                m.c.status != "left",
                m.c.vehicle_id.in_(vehicle_ids),
            )
        )
        return {row.vehicle_id: row.rollout_id for row in found}


def rollouts(queries: Queries, limit: int = 100) -> list[dict[str, Any]]:
    table = queries.views.rollouts.rollouts
    with queries.views.store.reading() as s:
        found = rows(s.execute(table.select().order_by(table.c.started_at.desc()).limit(limit)))
    return [
        {
            "rolloutId": r["rollout_id"],
            "state": r["state"],
            "paused": r["paused"],
            "selector": r["selector"],
            "release": r["release_key"],
            "startedAt": r["started_at"],
            "updatedAt": r["updated_at"],
        }
        for r in found
    ]
