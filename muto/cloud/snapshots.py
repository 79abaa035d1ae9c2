"""What vehicles say about themselves: the latest retained `agent/metadata` and
`agent/components` snapshot of each vehicle, as received over MQTT.

Latest-only, like health_latest, not events: a snapshot is evidence a vehicle re-publishes
on every connect and on refresh, not a decision to keep in the log. The inventory shows
it as the vehicle's `reported` part."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, MetaData, String, Table, select

from muto.cloud.api.schema import Reported, ReportedAgent
from muto.domain.messages import (
    AgentComponents,
    AgentMetadata,
    AgentMetadataV1,
    Component,
    Leaf,
)
from muto.domain.wire import convert, encode
from muto.projections.rows import LatestRows
from muto.projections.store import ViewStore

Snapshot = AgentMetadata | AgentMetadataV1 | AgentComponents
KIND: dict[type[Snapshot], Leaf] = {
    AgentMetadata: Leaf.AGENT_METADATA,
    AgentMetadataV1: Leaf.AGENT_METADATA,  # an agent not yet upgraded: no safety floor said
    AgentComponents: Leaf.AGENT_COMPONENTS,
}


class Snapshots:
    def __init__(self, store: ViewStore) -> None:
        self.store = store
        self.table = Table(
            "vehicle_snapshots",
            MetaData(),  # its own: not a projection, never reshaped or rebuilt from the log
            Column("vehicle_id", String(128), primary_key=True),
            Column("leaf", String(32), primary_key=True),
            Column("received_at", String(40), nullable=False),
            Column("snapshot", JSON, nullable=False),
        )
        self.table.create(store.engine, checkfirst=True)
        self._rows = LatestRows(self.table)

    def record(self, vehicle_id: str, snapshot: Snapshot) -> None:
        self.record_many([(vehicle_id, snapshot)])

    def record_many(self, snapshots: list[tuple[str, Snapshot]]) -> None:
        """In one transaction (a fleet re-publishing after a rollout sends thousands);
        the last of one vehicle's leaf wins."""
        if not snapshots:
            return
        at = datetime.now(UTC).isoformat()
        rows = [
            (vehicle_id, KIND[type(snapshot)].value, at, encode(snapshot).decode())
            for vehicle_id, snapshot in snapshots
        ]
        with self.store.transaction(commit=True) as session:
            self._rows.write(session, rows)

    def reported(self, vehicle_ids: list[str]) -> dict[str, Reported]:
        """Per vehicle that has said anything: `agent` (version, runtime, model, OS, ROS
        distro), `components` (cached artifacts and their roles) and when each came."""
        if not vehicle_ids:
            return {}
        t = self.table
        with self.store.reading() as session:
            rows = session.execute(select(t).where(t.c.vehicle_id.in_(vehicle_ids))).all()
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            said = found.setdefault(row.vehicle_id, {})
            if row.leaf == Leaf.AGENT_METADATA.value:
                body = {k: v for k, v in row.snapshot.items() if k not in ("schema", "vehicleId")}
                said["agent"], said["agent_at"] = convert(body, ReportedAgent), row.received_at
            else:
                said["components"] = convert(row.snapshot["components"], list[Component])
                said["components_at"] = row.received_at
        return {vehicle_id: Reported(**NOTHING_YET | said) for vehicle_id, said in found.items()}


NOTHING_YET: dict[str, Any] = dict.fromkeys(("agent", "agent_at", "components", "components_at"))
