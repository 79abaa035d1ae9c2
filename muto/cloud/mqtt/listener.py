"""Vehicles' reports and presence over MQTT, stored exactly as the HTTP API stores them.

The vehicle id comes from the topic: the broker's ACL is what binds a vehicle to its own
subtree, so a payload that names another vehicle is dropped. Nothing a vehicle sends can
stop the loop: refusals (unknown vehicle, malformed payload) are logged with the reason
and acknowledged; a message is acknowledged only after it was stored or refused, so a
cloud that dies in between gets it again from its persistent session.

Snapshots (agent metadata and components) that arrive back to back are stored together,
in one transaction, and acknowledged after it, in arrival order: after a wave every
vehicle re-publishes its components, and one transaction each held the database's one
writer from the reports (a tenth of the cloud's time in a 1,000-vehicle rollout).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiomqtt
from sqlalchemy import select

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import record_presence
from muto.cloud.errors import AppError
from muto.cloud.snapshots import Snapshot
from muto.domain.errors import ReasonError
from muto.domain.messages import (
    TOPICS,
    AgentComponents,
    Leaf,
    Presence,
    PresenceState,
    RefreshResult,
    decode_metadata,
    vehicle_topic,
)
from muto.domain.reports import HealthReport, ReconcileReport
from muto.domain.wire import WireError, decode

logger = logging.getLogger("muto.mqtt")
ATTEMPTS = 3  # an unexpected failure (database blip) is retried, then the message dropped
SNAPSHOT_BATCH = 500  # snapshots stored in one transaction at most
SNAPSHOTS = frozenset({Leaf.AGENT_METADATA, Leaf.AGENT_COMPONENTS})

Route = Callable[[str, bytes, bool], Awaitable[None]]  # (vehicle id, payload, retained)


class WrongVehicle(AppError):
    pass


def parse_topic(topic: str, tenant: str) -> tuple[str, Leaf] | None:
    """`muto/<tenant>/vehicles/<vehicleId>/<leaf>` -> (vehicleId, leaf)."""
    parts = topic.split("/", 4)
    if len(parts) != 5 or parts[:3] != ["muto", tenant, "vehicles"]:
        return None
    try:
        return parts[3], Leaf(parts[4])
    except ValueError:
        return None


def _claims(topic_vehicle: str, payload_vehicle: str) -> None:
    if payload_vehicle != topic_vehicle:
        raise WrongVehicle(
            f"payload vehicleId {payload_vehicle!r} differs from the topic's {topic_vehicle!r}"
        )


class Listener:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.tenant = plane.settings.tenant
        self.routes: dict[Leaf, Route] = {
            Leaf.REPORTS_RECONCILE: self._reconcile,
            Leaf.REPORTS_HEALTH: self._health,
            Leaf.PRESENCE: self._presence,
            Leaf.AGENT_METADATA: self._metadata,
            Leaf.AGENT_COMPONENTS: self._components,
            Leaf.EVT_REFRESH_RESULT: self._refreshed,
        }
        # request id -> (vehicle id, the future `Bridge.refresh` awaits)
        self.refreshes: dict[str, tuple[str, asyncio.Future[RefreshResult]]] = {}
        # The HTTP body limit: one size limit on every ingress path.
        self.max_bytes = plane.settings.max_body_bytes
        self.stored = 0  # messages stored (including idempotent duplicates)
        self.dropped = 0
        self.busy = asyncio.Lock()  # held while one message is handled and acknowledged

    def filters(self) -> list[tuple[str, int]]:
        return [(vehicle_topic(self.tenant, "+", leaf), TOPICS[leaf].qos) for leaf in self.routes]

    async def run(self, client: aiomqtt.Client) -> None:
        """Handle messages one at a time, in arrival order (presence online, then the
        Last Will's offline), until the link drops or the task is cancelled. The bridge
        has subscribed to `filters()`."""
        held: list[aiomqtt.Message] = []  # snapshots to store together, in arrival order
        async for message in client.messages:
            async with self.busy:
                found = parse_topic(message.topic.value, self.tenant)
                if found is not None and found[1] in SNAPSHOTS and message.payload:
                    held.append(message)
                    if len(client.messages) and len(held) < SNAPSHOT_BATCH:
                        continue  # the next message is already here: store them together
                    await self._snapshots(client, held)
                    held = []
                    continue
                if held:  # acknowledgements go out in arrival order
                    await self._snapshots(client, held)
                    held = []
                await self.handle(message.topic.value, _bytes(message.payload), message.retain)
                _ack(client, message)

    async def _snapshots(self, client: aiomqtt.Client, messages: list[aiomqtt.Message]) -> None:
        """Store the valid snapshots among `messages` in one transaction (retried like
        one message), then acknowledge them all."""
        decoded: list[tuple[str, Snapshot]] = []
        for message in messages:
            topic, payload = message.topic.value, _bytes(message.payload)
            vehicle_id, leaf = parse_topic(topic, self.tenant) or ("", Leaf.AGENT_METADATA)
            try:
                if len(payload) > self.max_bytes:
                    raise WireError(f"{len(payload)} bytes, over the {self.max_bytes}-byte limit")
                snapshot: Snapshot = (
                    decode_metadata(payload)
                    if leaf is Leaf.AGENT_METADATA
                    else decode(payload, AgentComponents)
                )
                _claims(vehicle_id, snapshot.vehicle_id)
                decoded.append((vehicle_id, snapshot))
            except (AppError, WireError) as exc:
                logger.warning("dropped %s on %s: %s", leaf, topic, exc)
                self.dropped += 1
        for attempt in range(1, ATTEMPTS + 1):
            try:
                stored = await asyncio.to_thread(self._store_snapshots, decoded)
                self.stored += stored
                self.dropped += len(decoded) - stored
                break
            except Exception:
                logger.exception("storing %d snapshots failed (attempt %d)", len(decoded), attempt)
                await asyncio.sleep(0.5 * attempt)
        else:
            self.dropped += len(decoded)
        for message in messages:
            _ack(client, message)

    def _store_snapshots(self, decoded: list[tuple[str, Snapshot]]) -> int:
        """Those of registered vehicles, in one transaction; returns how many."""
        vehicles = self.plane.views.inventory.vehicles
        ids = sorted({vehicle_id for vehicle_id, _ in decoded})
        with self.plane.views.store.reading() as s:
            known = set(
                s.scalars(select(vehicles.c.vehicle_id).where(vehicles.c.vehicle_id.in_(ids)))
            )
        for vehicle_id in set(ids) - known:
            logger.warning("dropped snapshots of %r: vehicle is not registered", vehicle_id)
        kept = [(v, snapshot) for v, snapshot in decoded if v in known]
        self.plane.snapshots.record_many(kept)
        return len(kept)

    async def handle(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """`retained`: the broker's stored copy, sent on subscribing (not news now)."""
        found = parse_topic(topic, self.tenant)
        route = self.routes.get(found[1]) if found else None
        if found is None or route is None:
            logger.warning("dropped a message on %s: not a topic the cloud reads", topic)
            self.dropped += 1
            return
        vehicle_id, leaf = found
        if not payload:
            return  # a cleared retained topic (decommissioned vehicle): nothing to store
        if len(payload) > self.max_bytes:
            logger.warning(
                "dropped %s on %s: %d bytes, over the %d-byte limit (the HTTP body limit)",
                *(leaf, topic, len(payload), self.max_bytes),
            )
            self.dropped += 1
            return
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await route(vehicle_id, payload, retained)
                self.stored += 1
                return
            except (AppError, ReasonError, WireError) as exc:
                logger.warning("dropped %s on %s: %s", leaf, topic, exc)
                break
            except Exception:
                logger.exception("storing %s on %s failed (attempt %d)", leaf, topic, attempt)
                await asyncio.sleep(0.5 * attempt)
        self.dropped += 1

    async def _reconcile(self, vehicle_id: str, payload: bytes, _: bool) -> None:
        report = decode(payload, ReconcileReport)
        _claims(vehicle_id, report.vehicle_id)
        await self.plane.ingest.reconcile(report, f"vehicle:{vehicle_id}")

    async def _health(self, vehicle_id: str, payload: bytes, _: bool) -> None:
        report = decode(payload, HealthReport)
        _claims(vehicle_id, report.vehicle_id)
        await self.plane.ingest.health(report, f"vehicle:{vehicle_id}")

    async def _presence(self, vehicle_id: str, payload: bytes, retained: bool) -> None:
        """A change of state is an event; an online heartbeat heard live (not the
        retained copy replayed on subscribing, which may be a frozen agent's last word)
        only moves the heartbeat table."""
        presence = decode(payload, Presence)
        _claims(vehicle_id, presence.vehicle_id)
        at = presence.at.isoformat() if presence.at else None
        await self.plane.write(
            record_presence(vehicle_id, presence.state.value, at, f"vehicle:{vehicle_id}")
        )
        if presence.state is PresenceState.ONLINE and not retained:
            self.plane.ingest.heartbeat(vehicle_id, presence.heartbeat_s)

    async def _metadata(self, vehicle_id: str, payload: bytes, _: bool) -> None:
        snapshot = decode_metadata(payload)
        _claims(vehicle_id, snapshot.vehicle_id)
        await self._snapshot(vehicle_id, snapshot)

    async def _components(self, vehicle_id: str, payload: bytes, _: bool) -> None:
        snapshot = decode(payload, AgentComponents)
        _claims(vehicle_id, snapshot.vehicle_id)
        await self._snapshot(vehicle_id, snapshot)

    async def _snapshot(self, vehicle_id: str, snapshot: Snapshot) -> None:
        def store() -> None:
            self.plane.queries.vehicle(vehicle_id)  # NotFound: an unregistered vehicle
            self.plane.snapshots.record(vehicle_id, snapshot)

        await asyncio.to_thread(store)

    async def _refreshed(self, vehicle_id: str, payload: bytes, _: bool) -> None:
        """The answer to a refresh this process asked for (by request id); another's is
        none of its business. The snapshots it re-published came before it, in order."""
        result = decode(payload, RefreshResult)
        waiting = self.refreshes.get(result.request_id)
        if waiting is not None and waiting[0] == vehicle_id and not waiting[1].done():
            waiting[1].set_result(result)


def _ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)  # see link.py


def _bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()
