"""Rollouts as the rollouts view (joined with the inventory) shows them: one with its
progress per phase and what it waits for, the list, and the canary candidates."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import and_, func, or_, select

from muto.cloud.api.schema import (
    GateDecision,
    OutstandingMember,
    PhaseProgress,
    Rollout,
    RolloutMember,
    RolloutSummary,
)
from muto.cloud.errors import NotFound
from muto.cloud.queries.vehicles import VehicleReads, presence_now, vehicle_view
from muto.domain.model.rollout_states import (
    ACTIVE_STATES,
    DEFAULT_BAKE_SEC,
    FINAL_STATES,
    LIMITS,
    WAITS_FOR,
)
from muto.domain.requests import RolloutThresholds
from muto.domain.rollout_rules import MemberStatus, left_when_paused
from muto.domain.selectors import parse_selector
from muto.projections.store import rows

ACTIVE_ROLLOUT_STATES = tuple(str(state) for state in ACTIVE_STATES)
FINAL_ROLLOUT_STATES = frozenset(str(state) for state in FINAL_STATES)
# The member statuses a phase still waits for; GET /rollouts/{id} lists them (capped).
OUTSTANDING = ("pending", "assigned", "deferred")
# A member given a rollback it has not confirmed: outstanding whatever the rollout's state
# (its rollback is final: the decision was made, the vehicle has not taken it yet).
ROLLING_BACK = str(MemberStatus.ROLLING_BACK)
OUTSTANDING_SHOWN = 100


class RolloutReads(VehicleReads):
    """A rollout's reads use the fleet's: its members' presence, the selector's pick."""

    def rollout(self, rollout_id: str) -> Rollout:
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
        return rollout_view(r, members, waiting, not_in)

    def _outstanding(self, s: Any, rollout_id: str, state: str) -> list[OutstandingMember]:
        """Why a rollout waits: the members of its current phase (an active one) that
        have not converged or failed, and the members given a rollback that have not
        confirmed it (any state), with their presence and last report."""
        m, v, h = self.views.rollouts.vehicles, self.views.inventory.vehicles, self.heartbeats
        phase = WAITS_FOR.get(state)
        waiting = m.c.status == ROLLING_BACK
        if phase is not None:
            waiting = or_(waiting, and_(m.c.phase == phase, m.c.status.in_(OUTSTANDING)))
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
                h.c.heard_at,
                h.c.heartbeat_s,
            )
            .join(v, v.c.vehicle_id == m.c.vehicle_id, isouter=True)
            .join(h, h.c.vehicle_id == m.c.vehicle_id, isouter=True)
            .where(m.c.rollout_id == rollout_id, waiting)
            .order_by(m.c.vehicle_id)
        )
        return [
            OutstandingMember(
                vehicle_id=row.vehicle_id,
                status=row.status,
                reason_codes=row.reason_codes,
                presence=presence_now(row.presence, row.presence_at, row.heard_at, row.heartbeat_s),
                presence_at=row.presence_at,
                last_status=row.last_status,
                last_reason_codes=row.last_reason_codes or [],
                last_report_at=row.last_report_at,
            )
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


def rollout_view(
    r: dict[str, Any],
    members: list[dict[str, Any]],
    outstanding: list[OutstandingMember],
    not_in_rollout: int,
) -> Rollout:
    """The API's rollout from its row of the rollouts view, its members' rows, what its
    phase waits for and how many matching vehicles are not members. A rollout stored
    before bakes existed has no `bakeSec`: it did not bake (DEFAULT_BAKE_SEC)."""
    if r["state"] in FINAL_ROLLOUT_STATES:  # never assigned, and never will be
        members = [
            {**m, "status": "not_assigned"} if m["status"] == "pending" else m for m in members
        ]
    deadline, remaining = paused_deadline(r)
    return Rollout(
        **msgspec.structs.asdict(rollout_summary(r)),
        thresholds=msgspec.convert(
            {LIMITS["baking"]: DEFAULT_BAKE_SEC, **r["thresholds"]}, RolloutThresholds
        ),
        decisions=msgspec.convert(r["decisions"], list[GateDecision]),
        deadline=deadline,
        deadline_remaining_s=remaining,
        outstanding=outstanding[:OUTSTANDING_SHOWN],
        outstanding_total=len(outstanding),
        not_in_rollout=not_in_rollout,
        phases=progress(members),
        vehicles=[
            RolloutMember(
                vehicle_id=m["vehicle_id"],
                phase=m["phase"],
                revision=m["revision"],
                status=m["status"],
                reason_codes=m["reason_codes"],
                superseded_by=m.get("superseded_by") if m["status"] == "superseded" else None,
            )
            for m in members
        ],
    )


def paused_deadline(r: dict[str, Any]) -> tuple[str | None, float | None]:
    """(deadline, seconds remaining): a paused phase's clock stands still, so it has no
    deadline, only what was left of it when paused (its deadline moves out on resume)."""
    deadline, paused_at = r["deadline_at"], r.get("paused_at")
    if not r["paused"] or deadline is None:
        return deadline, None
    if paused_at is None:  # paused before times were kept: nothing better to say
        return None, None
    return None, left_when_paused(
        datetime.fromisoformat(deadline), datetime.fromisoformat(paused_at)
    )


def rollout_summary(r: dict[str, Any]) -> RolloutSummary:
    """A rollout as GET /rollouts lists it, from its row of the rollouts view."""
    return RolloutSummary(
        rollout_id=r["rollout_id"],
        state=r["state"],
        paused=r["paused"],
        selector=r["selector"],
        release=r["release_key"],
        started_at=r["started_at"],
        updated_at=r["updated_at"],
    )


def progress(members: list[dict[str, Any]]) -> dict[str, PhaseProgress]:
    """Per phase: targeted, and counts by status; deferred, failed and rolled back by
    reason code."""
    statuses: dict[str, Counter[str]] = {}
    codes: dict[tuple[str, str], Counter[str]] = {}
    for m in members:
        statuses.setdefault(m["phase"], Counter())[m["status"]] += 1
        if m["status"] in ("deferred", "failed", "rolling_back", "rolled_back"):
            codes.setdefault((m["phase"], m["status"]), Counter()).update(m["reason_codes"])
    return {
        phase: PhaseProgress(
            targeted=counted.total(),
            pending=counted["pending"],
            assigned=counted["assigned"],
            converged=counted["converged"],
            deferred=counted["deferred"],
            failed=counted["failed"],
            rolling_back=counted["rolling_back"],
            rolled_back=counted["rolled_back"],
            left=counted["left"],
            superseded=counted["superseded"],
            not_assigned=counted["not_assigned"],
            deferred_by=dict(codes.get((phase, "deferred"), {})),
            failed_by=dict(codes.get((phase, "failed"), {})),
            rolled_back_by=dict(codes.get((phase, "rolled_back"), {})),
            rolling_back_by=dict(codes.get((phase, "rolling_back"), {})),
        )
        for phase, counted in statuses.items()
    }


def rollout_candidates(queries: RolloutReads, vehicle_ids: list[str]) -> list[dict[str, Any]]:
    """Labels, presence (as the fleet shows it now: `stale` judged), last status and
    running release of the given vehicles, for canary selection."""
    vehicles = queries.views.inventory.vehicles
    with queries.views.store.reading() as s:
        found = rows(s.execute(queries.vehicle_rows.where(vehicles.c.vehicle_id.in_(vehicle_ids))))
    return [
        {
            "vehicle_id": r["vehicle_id"],
            "labels": r["labels"],
            "presence": vehicle_view(r).presence,
            "last_status": r["last_status"],
            "running_release": r["running_release"],
        }
        for r in found
    ]


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
                m.c.status.not_in(("left", "superseded")),
                m.c.vehicle_id.in_(vehicle_ids),
            )
        )
        return {row.vehicle_id: row.rollout_id for row in found}


def members_in_other_active_rollouts(queries: RolloutReads, rollout_id: str) -> dict[str, str]:
    """vehicle id -> id of another active rollout that targets it, for the members of
    `rollout_id` (those that left it excluded)."""
    m = queries.views.rollouts.vehicles
    with queries.views.store.reading() as s:
        members = list(
            s.scalars(
                select(m.c.vehicle_id).where(m.c.rollout_id == rollout_id, m.c.status != "left")
            )
        )
    busy = vehicles_in_active_rollouts(queries, members) if members else {}
    return {v: r for v, r in busy.items() if r != rollout_id}


def rollouts(queries: RolloutReads, limit: int = 100) -> list[RolloutSummary]:
    table = queries.views.rollouts.rollouts
    with queries.views.store.reading() as s:
        found = rows(s.execute(table.select().order_by(table.c.started_at.desc()).limit(limit)))
    return [rollout_summary(r) for r in found]
