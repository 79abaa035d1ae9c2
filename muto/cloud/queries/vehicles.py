"""The fleet's reads (the inventory view with each vehicle's last heartbeat): the API's
vehicle, pages of them, and which vehicles a selector picks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import msgspec
from sqlalchemy import Select, Table, and_, func, select

from muto.cloud.api.schema import VehicleView
from muto.cloud.errors import NotFound
from muto.domain.presence import shown_presence
from muto.domain.selectors import Selector
from muto.projections import Views
from muto.projections.store import rows

# The API's vehicle (schema.VehicleView) names the inventory's columns: field -> column,
# derived from the Struct, so that the two cannot drift apart. `reported` is not a
# column (snapshots.py); the heartbeat is the heartbeats table's.
COLUMN_OF = {"last_heartbeat_at": "heard_at"}
VEHICLE_COLUMNS = {
    f.name: COLUMN_OF.get(f.name, f.name)
    for f in msgspec.structs.fields(VehicleView)
    if f.name != "reported"
}


def vehicle_view(row: dict[str, Any]) -> VehicleView:
    """The API's vehicle from a row of `vehicle_rows` (the inventory joined with the
    heartbeat; the view's bookkeeping columns stay inside), its presence judged now
    ("stale": online, but silent for three heartbeats)."""
    fields: dict[str, Any] = {name: row[column] for name, column in VEHICLE_COLUMNS.items()}
    fields["presence"] = presence_now(
        fields["presence"], fields["presence_at"], fields["last_heartbeat_at"], row["heartbeat_s"]
    )
    return VehicleView(**fields)


def presence_now(
    presence: str | None, presence_at: str | None, heard_at: str | None, heartbeat_s: float | None
) -> str | None:
    """A vehicle's stored presence as the fleet shows it now: "stale" when online but
    silent for three heartbeats (last heard: its heartbeat, else its presence)."""
    heard = heard_at or presence_at
    if not heard or presence != "online":  # only an online vehicle can be stale
        return presence
    at = datetime.fromisoformat(heard)
    if at.tzinfo is None:  # stored before presence times needed an offset
        at = at.replace(tzinfo=UTC)
    return shown_presence("online", at, heartbeat_s, datetime.now(UTC))


@dataclass(frozen=True)
class Page:
    items: list[VehicleView]
    total: int
    next_cursor: str | None


class VehicleReads:
    views: Views
    heartbeats: Table  # ingest.py's table, not a projection

    @cached_property
    def vehicle_rows(self) -> Select[Any]:
        """A vehicle row with its last heartbeat: what `vehicle_view` reads."""
        vehicles, heartbeats = self.views.inventory.vehicles, self.heartbeats
        return select(vehicles, heartbeats.c.heard_at, heartbeats.c.heartbeat_s).outerjoin(
            heartbeats, heartbeats.c.vehicle_id == vehicles.c.vehicle_id
        )

    def selected(self, selector: Selector | None) -> Any:
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
            query = self.selected(selector).order_by(self.views.inventory.vehicles.c.vehicle_id)
            return [r[0] for r in s.execute(query)]

    def vehicles(
        self, selector: Selector | None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """Vehicles ordered by id; `cursor` is the last id of the previous page."""
        vehicles = self.views.inventory.vehicles
        ids = self.selected(selector).subquery()
        with self.views.store.reading() as s:
            total = s.execute(select(func.count()).select_from(ids)).scalar_one()
            query = self.vehicle_rows.where(vehicles.c.vehicle_id.in_(select(ids.c.vehicle_id)))
            if cursor:
                query = query.where(vehicles.c.vehicle_id > cursor)
            found = rows(s.execute(query.order_by(vehicles.c.vehicle_id).limit(limit + 1)))
        more = len(found) > limit
        items = [vehicle_view(r) for r in found[:limit]]
        return Page(items, total, items[-1].vehicle_id if more else None)

    def stale(self, selector: Selector | None) -> int:
        """How many of the selected vehicles stored as online are shown stale now (the
        same rule as each vehicle's `presence`): the counts by presence move them."""
        vehicles = self.views.inventory.vehicles
        ids = self.selected(selector).subquery()
        query = self.vehicle_rows.where(
            vehicles.c.vehicle_id.in_(select(ids.c.vehicle_id)), vehicles.c.presence == "online"
        )
        with self.views.store.reading() as s:
            return sum(vehicle_view(r).presence == "stale" for r in rows(s.execute(query)))

    def vehicle(self, vehicle_id: str) -> VehicleView:
        vehicles = self.views.inventory.vehicles
        with self.views.store.reading() as s:
            found = rows(s.execute(self.vehicle_rows.where(vehicles.c.vehicle_id == vehicle_id)))
        if not found:
            raise NotFound(f"vehicle {vehicle_id!r} is not registered")
        return vehicle_view(found[0])
