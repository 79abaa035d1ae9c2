"""The vehicle's MQTT session (spec/mqtt-topics.md): presence with a Last Will and a
heartbeat, retained snapshots, desired/notify hints, read-only cmd/refresh.

Invariants: runs as its own task and reconnects with capped, jittered backoff, so MQTT
trouble never reaches the reconcile loop; the Last Will (retained offline presence) is
set on every connect; snapshots are published on connect and on refresh at once (all of
them), and when they change, throttled: the first change after a quiet
`snapshot_interval_s` is published at once, later changes within the interval are folded
into one publish of the latest state when it ends (only leaves whose bytes differ from
the last published ones go out), so the final state is always published and a burst of
phase changes costs at most two publishes per interval; a notify only triggers a
reconcile, only when its sequence is above the accepted one (`accepted_sequence`: the
journal's newest verified desired state, read, never written here: a forged notify cannot
silence later genuine ones), and its URL is never used (the agent fetches from its
configured cloud); an inbound payload over MAX_INBOUND_BYTES is dropped before it is
decoded, and every drop is logged, once per cause; on every reconnect the last reconcile
report the broker acknowledged is published again (a broker that crashed before saving
it lost it; the cloud de-duplicates by reportId).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import aiomqtt
import paho.mqtt.client as paho

from muto.agent.signals import Signals
from muto.agent.transport.http import Delivery
from muto.domain.broker import Broker
from muto.domain.messages import (
    DesiredNotify,
    Leaf,
    Presence,
    PresenceState,
    RefreshRequest,
    RefreshResult,
    vehicle_topic,
)
from muto.domain.wire import Wire, WireError, decode, encode

logger = logging.getLogger("muto.agent.mqtt")
KEEPALIVE_S = 30
PUBLISH_TIMEOUT_S = 10.0
# What the agent reads (a notify, a refresh) is a few KB at its schemas' bounds: anything
# over this is dropped undecoded. A 100 MB refresh, decoded and echoed, cost an agent
# 500 MB; the broker's message_size_limit (1 MiB as shipped) stops such a one first.
MAX_INBOUND_BYTES = 64 * 1024


class VehicleView(Protocol):
    """What the link reads of its vehicle's agent (parts.AgentView)."""

    def snapshots(self) -> dict[Leaf, Wire]: ...

    def heartbeat_s(self) -> float: ...

    def accepted_sequence(self) -> int: ...


class _Client(aiomqtt.Client):
    """aiomqtt's client, with paho's housekeeping (the keepalive ping, and giving up on
    an unanswered one) run every quarter keepalive instead of every second. A ping goes
    out between one and 1.25 keepalives after the last packet, inside the 1.5 the
    broker allows. One agent's link woke its event loop once a second for nothing;
    2,500 simulated agents on one loop spent 5 % of their process there."""

    async def _misc_loop(self) -> None:
        interval = self._keepalive / 4 or 1.0  # keepalive 0: no pings, only the socket check
        while self._client.loop_misc() == paho.MQTT_ERR_SUCCESS:
            await asyncio.sleep(interval)


class MqttLink:
    def __init__(
        self,
        broker: Broker,
        tenant: str,
        vehicle_id: str,
        *,
        view: VehicleView,
        signals: Signals,
        clock_now: Callable[[], datetime],
        snapshot_interval_s: float,  # AgentSettings'
        rng: random.Random | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        keepalive_s: int = KEEPALIVE_S,
        timeout_s: float = PUBLISH_TIMEOUT_S,  # each broker round trip (CONNACK, SUBACK, PUBACK)
    ) -> None:
        self.broker = broker
        self.tenant = tenant
        self.vehicle_id = vehicle_id
        self.view = view
        self.signals = signals
        self.now = clock_now
        self.rng = rng or random.Random()
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.snapshot_interval_s = snapshot_interval_s
        self.keepalive_s, self.timeout_s = keepalive_s, timeout_s
        self.connected = False
        self.connections = 0
        self.handled = 0  # messages taken off the subscription (tests wait on the count)
        self.dropped = 0  # of those, the ones ignored (too big, malformed, not ours)
        self._told: set[tuple[str, str]] = set()  # (topic, cause) of drops logged
        # The last reconcile report the broker acknowledged (its exact bytes): published
        # again on every reconnect, since a PUBACK is not delivery to the cloud (below).
        self._delivered: bytes | None = None
        self._client: aiomqtt.Client | None = None
        self._published: dict[Leaf, bytes] = {}
        self._stopping = asyncio.Event()

    @property
    def accepted_sequence(self) -> int:
        """A notify at or below it is old news: the sequence of the newest desired state
        that verified (the journal's; a notify is a hint and never moves it)."""
        return self.view.accepted_sequence()

    def topic(self, leaf: Leaf) -> str:
        return vehicle_topic(self.tenant, self.vehicle_id, leaf)

    async def run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            session: aiomqtt.Client | None = None
            try:
                session = self._new_client()
                async with session as client:
                    self._client, self.connected = client, True
                    self.connections += 1
                    attempt = 0
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                logger.info("MQTT %s:%s unavailable: %s", self.broker.host, self.broker.port, exc)
            except Exception:  # never let the link die for good: log, back off, reconnect
                logger.exception("MQTT session failed")
            finally:
                self._client, self.connected = None, False
                # aiomqtt (2.5.1, client.py:786-792) leaves paho's socket open when the
                # CONNACK never comes (or the connect is cancelled): close it here, or
                # every attempt on a broker that accepts but does not answer leaks one.
                if session is not None:
                    session._client._sock_close()
            if self._stopping.is_set():
                return
            ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** min(attempt, 16))
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ceiling * self.rng.uniform(0.5, 1)):  # see Courier.run
                    await self._stopping.wait()

    async def stop(self) -> None:
        """Ask the session to end cleanly: offline presence published, then disconnect."""
        self._stopping.set()

    async def deliver(self, kind: str, body: bytes) -> tuple[Delivery, str]:
        """A report over MQTT (QoS 1): acknowledged when the broker acknowledges it. The
        broker may still lose it (a crash before it saved the cloud's queued session):
        the last reconcile report is kept to be published again on reconnect."""
        client = self._client
        if client is None:
            return "retry", "MQTT not connected"
        leaf = Leaf.REPORTS_RECONCILE if kind == "reconcile" else Leaf.REPORTS_HEALTH
        try:
            await client.publish(self.topic(leaf), body, qos=1, timeout=self.timeout_s)
        except aiomqtt.MqttError as exc:
            return "retry", str(exc)
        if leaf is Leaf.REPORTS_RECONCILE:
            self._delivered = body  # the courier delivers in order: the newest so far
        return "ack", "PUBACK"

    def _new_client(self) -> aiomqtt.Client:
        offline = Presence(
            schema="muto.presence.v1", vehicle_id=self.vehicle_id, state=PresenceState.OFFLINE
        )
        return _Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=f"muto-agent-{self.vehicle_id}",
            keepalive=self.keepalive_s,
            timeout=self.timeout_s,
            will=aiomqtt.Will(self.topic(Leaf.PRESENCE), encode(offline), qos=1, retain=True),
            tls_context=ssl.create_default_context() if self.broker.tls else None,
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(
            [(self.topic(Leaf.DESIRED_NOTIFY), 1), (self.topic(Leaf.CMD_REFRESH), 1)]
        )
        self._published.clear()
        await self._presence(client, PresenceState.ONLINE)
        self.signals.shown.clear()  # what changed before now is in the full publish below
        await self._publish_snapshots(client, force=True)
        await self._redeliver(client)
        tasks = [
            asyncio.create_task(self._heartbeat(client)),
            asyncio.create_task(self._snapshot_loop(client)),
            asyncio.create_task(self._messages(client)),
            asyncio.create_task(self._stopping.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
        await self._presence(client, PresenceState.OFFLINE)  # a clean exit says so itself

    async def _presence(self, client: aiomqtt.Client, state: PresenceState) -> None:
        online = state is PresenceState.ONLINE
        at, interval = (self.now(), self.view.heartbeat_s()) if online else (None, None)
        payload = encode(
            Presence(
                schema="muto.presence.v1",
                vehicle_id=self.vehicle_id,
                state=state,
                at=at,
                heartbeat_s=interval,
            )
        )
        await client.publish(
            self.topic(Leaf.PRESENCE), payload, qos=1, retain=True, timeout=self.timeout_s
        )

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        while True:
            retimed = self.signals.retimed
            retimed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.view.heartbeat_s()):  # see Courier.run
                    await retimed.wait()
            await self._presence(client, PresenceState.ONLINE)

    async def _snapshot_loop(self, client: aiomqtt.Client) -> None:
        """A throttle, not a debounce: a change after a quiet interval goes out at once
        (leading edge); changes during the interval that follows only set `signals.shown`, and
        the loop publishes the state as it is then once the interval ends (trailing
        edge)."""
        loop, shown = asyncio.get_running_loop(), self.signals.shown
        while True:
            await shown.wait()
            shown.clear()
            started = loop.time()
            await self._publish_snapshots(client, force=False)
            rest = started + self.snapshot_interval_s - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)

    async def _publish_snapshots(self, client: aiomqtt.Client, force: bool) -> list[Leaf]:
        sent = []
        for leaf, payload in self.view.snapshots().items():
            data = encode(payload)
            if force or self._published.get(leaf) != data:
                await client.publish(
                    self.topic(leaf), data, qos=1, retain=True, timeout=self.timeout_s
                )
                self._published[leaf] = data
                sent.append(leaf)
        return sent

    async def _redeliver(self, client: aiomqtt.Client) -> None:
        """Publish the last reconcile report the broker acknowledged again, unchanged. A
        PUBACK means the broker has it, not the cloud: while the cloud is away its
        persistent session queues the report, and a broker that crashes before saving
        (autosave_interval) loses it; the fleet view then shows the report before it for
        good (a rollback hidden behind `converged`). A reconnect is when such a loss can
        have happened; the cloud stores a lost report now and de-duplicates by reportId
        one it has (its journal number keeps an older one from hiding a newer one)."""
        if self._delivered is not None:
            await client.publish(
                self.topic(Leaf.REPORTS_RECONCILE),
                self._delivered,
                qos=1,
                timeout=self.timeout_s,
            )

    async def _messages(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                await self._handle(client, message)
            finally:
                self.handled += 1

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray) or not payload:
            return  # a cleared retained topic
        topic = str(message.topic)
        if len(payload) > MAX_INBOUND_BYTES:
            self._drop(topic, "too big", f"{len(payload)} bytes, over {MAX_INBOUND_BYTES}")
            return
        try:
            if topic == self.topic(Leaf.DESIRED_NOTIFY):
                self._notified(topic, decode(bytes(payload), DesiredNotify))
            elif topic == self.topic(Leaf.CMD_REFRESH):
                await self._refresh(client, decode(bytes(payload), RefreshRequest))
        except WireError as exc:
            self._drop(topic, "malformed", str(exc))

    def _drop(self, topic: str, cause: str, detail: str) -> None:
        """Ignore a message, saying why: a warning the first time for each cause on each
        topic, debug after that (a flood of them must not flood the log)."""
        self.dropped += 1
        if (topic, cause) in self._told:
            logger.debug("ignoring a message on %s (%s): %s", topic, cause, detail)
            return
        self._told.add((topic, cause))
        logger.warning(
            "ignoring a message on %s (%s): %s; more of these are logged at debug level",
            *(topic, cause, detail),
        )

    def _notified(self, topic: str, notify: DesiredNotify) -> None:
        if notify.vehicle_id != self.vehicle_id:  # misrouted or forged: never acted on
            said = f"vehicleId {notify.vehicle_id!r}, not {self.vehicle_id!r}"
            self._drop(topic, "another vehicle's notify", said)
        elif notify.sequence > self.accepted_sequence:  # at or below it: old news
            self.signals.notify(notify.sequence)  # a hint: only a verified state moves the bar

    async def _refresh(self, client: aiomqtt.Client, request: RefreshRequest) -> None:
        """Read-only: re-publish the snapshots and say which; never reconcile."""
        sent = await self._publish_snapshots(client, force=True)
        result = RefreshResult(
            schema="muto.refresh-result.v1",
            request_id=request.request_id,
            ok=True,
            snapshots_updated=[str(leaf) for leaf in sent],
        )
        await client.publish(
            self.topic(Leaf.EVT_REFRESH_RESULT), encode(result), qos=1, timeout=self.timeout_s
        )
