"""Read side: answers from the projections' SQL views, never from the event store.

One module per view: vehicles (the inventory with heartbeats), releases (with the
desired states), rollouts, audit. `Queries` reads them all over one set of views."""

from __future__ import annotations

from sqlalchemy import Table

from muto.cloud.queries.audit import AuditReads, audit_entry
from muto.cloud.queries.releases import ReleaseReads, release_view
from muto.cloud.queries.rollouts import (
    RolloutReads,
    members_in_other_active_rollouts,
    progress,
    rollout_candidates,
    rollout_summary,
    rollout_view,
    rollouts,
    vehicles_in_active_rollouts,
)
from muto.cloud.queries.vehicles import VEHICLE_COLUMNS, Page, vehicle_view
from muto.projections import Views


class Queries(RolloutReads, ReleaseReads, AuditReads):
    def __init__(self, views: Views, heartbeats: Table) -> None:
        self.views = views
        self.heartbeats = heartbeats


__all__ = [
    "VEHICLE_COLUMNS",
    "Page",
    "Queries",
    "audit_entry",
    "members_in_other_active_rollouts",
    "progress",
    "release_view",
    "rollout_candidates",
    "rollout_summary",
    "rollout_view",
    "rollouts",
    "vehicle_view",
    "vehicles_in_active_rollouts",
]
