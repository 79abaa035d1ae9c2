"""Rollouts as the rollouts view (joined with the inventory) shows them: one with its
progress per phase and what it waits for, the list, and the canary candidates."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select

from muto.cloud.errors import NotFound
from muto.cloud.queries.vehicles import VehicleReads
from muto.domain.model.rollout_states import ACTIVE_STATES
from muto.domain.selectors import parse_selector
from muto.projections.store import rows

ACTIVE_ROLLOUT_STATES = tuple(str(state) for state in ACTIVE_STATES)
# The member statuses a phase still waits for; GET /rollouts/{id} lists them (capped).
OUTSTANDING = ("pending", "assigned", "deferred")
OUTSTANDING_SHOWN = 100


class RolloutReads(VehicleReads):
    """A rollout's reads use the fleet's: its members' presence, the selector's pick."""

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
        matching = self.selected(parse_selector(selector)).where(
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


def rollout_candidates(queries: RolloutReads, vehicle_ids: list[str]) -> list[dict[str, Any]]:
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


def vehicles_in_active_rollouts(queries: RolloutReads, vehicle_ids: list[str]) -> dict[str, str]:
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


def rollouts(queries: RolloutReads, limit: int = 100) -> list[dict[str, Any]]:
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
