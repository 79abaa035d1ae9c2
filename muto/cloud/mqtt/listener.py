"""Vehicles' reports and presence over MQTT, stored exactly as the HTTP API stores them.

The vehicle id comes from the topic: the broker's ACL is what binds a vehicle to its own
subtree, so a payload that names another vehicle is dropped. Nothing a vehicle sends can
stop the loop: refusals (unknown vehicle, malformed payload) are logged with the reason
and acknowledged; a message is acknowledged only after it was stored or refused, so a
cloud that dies in between gets it again from its persistent session. A store that fails
otherwise (the database refuses writes or is away) is no refusal: the message in hand is
tried again, with capped backoff, until it is stored, unacknowledged meanwhile (the
broker queues the rest); a bridge that stops or loses its lease first leaves it to the
broker, which delivers it again to the next session.

Snapshots (agent metadata and components) that arrive back to back are stored together,
in one transaction, and acknowledged after it, in arrival order: after a wave every
vehicle re-publishes its components, and one transaction each held the database's one
writer from the reports (a tenth of the cloud's time in a 1,000-vehicle rollout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiomqtt
from sqlalchemy import select

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import record_presence
from muto.cloud.errors import AppError, Conflict, database_refusal
from muto.cloud.mqtt.link import Backoff
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
# The cloud refuses the message for good (what it says, not the database's state): it is
# logged, acknowledged and dropped. Any other failure is retried, never dropped (a
# Conflict too: concurrent writers, `_until_stored`).
BAD_MESSAGE = (AppError, ReasonError, WireError)
# A failure that is neither the database's state nor the message's (a fault of the
# cloud's own) is tried this often, then the message is dropped with an error: tried
# for ever, one message would hold back every vehicle's behind it.
FAULT_TRIES = 5
RETRY = Backoff(base_s=0.5, cap_s=5.0)  # between tries to store the message in hand
SNAPSHOT_BATCH = 500  # snapshots stored in one transaction at most
SNAPSHOTS = frozenset({Leaf.AGENT_METADATA, Leaf.AGENT_COMPONENTS})

Route = Callable[[str, bytes, bool], Awaitable[None]]  # (vehicle id, payload, retained)
T = TypeVar("T")


class WrongVehicle(AppError):
    pass


class Unstorable(AppError):
    """Storing the message failed FAULT_TRIES times for a fault of the cloud's."""


class Stopping(Exception):
    """The bridge stops while the message in hand still cannot be stored: it stays
    unacknowledged, and the broker delivers it again to the next session."""


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
    def __init__(self, plane: ControlPlane, stopping: asyncio.Event | None = None) -> None:
        """`stopping`: set when the bridge stops (ends the retries of a failing store)."""
        self.plane = plane
        self.stopping = stopping
        self.retry = RETRY
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
        self.dropped = 0  # messages refused
        self.failures = 0  # failed tries to store a message (each tried again)
        self.busy = asyncio.Lock()  # held while one message is handled and acknowledged

    def filters(self) -> list[tuple[str, int]]:
        return [(vehicle_topic(self.tenant, "+", leaf), TOPICS[leaf].qos) for leaf in self.routes]

    async def run(self, client: aiomqtt.Client) -> None:
        """Handle messages one at a time, in arrival order (presence online, then the
        Last Will's offline), until the link drops, the task is cancelled or the bridge
        stops with a message it could not store yet. The bridge has subscribed to
        `filters()`."""
        with contextlib.suppress(Stopping):  # the rest is the broker's to deliver again
            await self._each(client)

    async def _each(self, client: aiomqtt.Client) -> None:
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
        """Store the valid snapshots among `messages` in one transaction (tried until it
        can be, like one message), then acknowledge them all."""
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
            except BAD_MESSAGE as exc:
                logger.warning("dropped %s on %s: %s", leaf, topic, exc)
                self.dropped += 1
        what = f"{len(decoded)} snapshots"
        try:
            stored = await self._until_stored(
                what, lambda: asyncio.to_thread(self._store_snapshots, decoded)
            )
        except Unstorable:
            stored = 0
        self.stored += stored
        self.dropped += len(decoded) - stored
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
        try:
            await self._until_stored(
                f"{leaf} on {topic}", lambda: route(vehicle_id, payload, retained)
            )
        except BAD_MESSAGE as exc:
            logger.warning("dropped %s on %s: %s", leaf, topic, exc)
            self.dropped += 1
            return
        self.stored += 1

    async def _until_stored(self, what: str, store: Callable[[], Awaitable[T]]) -> T:
        """`store()`'s result once it succeeds. A refusal raises; the database refusing
        writes or away (or other writers winning every try) is tried again with capped
        backoff for as long as it lasts, since the vehicle counts the message as
        delivered; any other failure FAULT_TRIES times, then Unstorable. Raises Stopping
        when the bridge stops first."""
        failures = faults = 0  # every failed try; those that were the cloud's own fault
        while True:
            try:
                result = await store()
            except Exception as exc:
                # A Conflict is other writers winning every try: the store's state, not
                # the message's, so it is tried again like the database's.
                if isinstance(exc, BAD_MESSAGE) and not isinstance(exc, Conflict):
                    raise
                self.failures += 1
                faults += not _transient(exc)  # an outage waited out spends none of them
                if faults >= FAULT_TRIES:
                    logger.error(
                        "dropping %s: storing it failed %d times, not for the database's "
                        "state nor for what it says (a fault of the cloud's): %s",
                        *(what, FAULT_TRIES, exc),
                    )
                    raise Unstorable(f"storing it failed {FAULT_TRIES} times") from exc
                if failures == 0:
                    logger.exception("storing %s failed: trying again until it is stored", what)
                else:
                    logger.warning(
                        "storing %s failed again (%d tries): %s", what, failures + 1, exc
                    )
                if await self._stops_within(self.retry.delay(failures)):
                    logger.warning("stopping: %s left unacknowledged, to be delivered again", what)
                    raise Stopping() from None
                failures += 1
                continue
            if failures:
                logger.info("stored %s after %d failed tries", what, failures)
            return result

    async def _stops_within(self, delay: float) -> bool:
        if self.stopping is None:
            await asyncio.sleep(delay)
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        return self.stopping.is_set()

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


def _transient(exc: BaseException) -> bool:
    """The store's state, which passes: the database refusing or away, or a Conflict."""
    return isinstance(exc, Conflict) or database_refusal(exc) is not None
