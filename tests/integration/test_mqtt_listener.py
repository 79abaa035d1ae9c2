"""The listener: reports and presence over MQTT are stored as over HTTP (idempotent by
report id, health and presence as transitions), refusals are logged and the loop goes
on, and reports sent while the cloud was down arrive when it is back."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.mqtt.bridge import Bridge
from muto.domain.messages import Leaf, Presence, PresenceState, vehicle_topic
from muto.domain.reports import HealthStatus
from tests.conftest import Mosquitto, unavailable
from tests.support.mqtt_watch import (
    FAST,
    TENANT,
    events,
    open_fleet,
    payload,
    settings_for,
)
from tests.support.spine import health_report, reconcile_report
from tests.support.waits import until

pytestmark = pytest.mark.mqtt


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def plane(request: pytest.FixtureRequest, tmp_path: Path, mosquitto: Mosquitto) -> ControlPlane:
    pg = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    cp = open_fleet(settings_for(request.param, tmp_path, mosquitto.url, pg), "v1", "v2")
    request.addfinalizer(cp.close)
    return cp


def topic(vehicle_id: str, leaf: Leaf) -> str:
    return vehicle_topic(TENANT, vehicle_id, leaf)


def with_bridge(cp: ControlPlane, body: Callable[[aiomqtt.Client], Awaitable[None]]) -> None:
    """Run `body(vehicle_client)` against a running, subscribed bridge."""
    url = cp.settings.mqtt_url or ""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)

    async def main() -> None:
        bridge = Bridge(cp, backoff=FAST)
        await bridge.start()
        try:
            await until(lambda: bridge.connected, "the bridge to subscribe")
            async with aiomqtt.Client(host, int(port), identifier="vehicle") as vehicle:
                await body(vehicle)
        finally:
            await bridge.stop()

    asyncio.run(main())


def report_ids(cp: ControlPlane) -> list[tuple[str, str]]:
    return [(e.vehicle_id, e.report.report_id) for e in events(cp, "ReconcileReported")]


def test_a_report_published_twice_is_recorded_once(plane: ControlPlane) -> None:
    first = reconcile_report("v1", "r1")

    async def body(vehicle: aiomqtt.Client) -> None:
        for report in (first, first, reconcile_report("v1", "r2")):
            await vehicle.publish(topic("v1", Leaf.REPORTS_RECONCILE), payload(report), qos=1)
        # Messages are handled in order: once r2 is stored, both copies of r1 were seen.
        await until(lambda: ("v1", "r2") in report_ids(plane), "r2 to be stored")
        assert report_ids(plane) == [("v1", "r1"), ("v1", "r2")]
        assert [e.actor for e in events(plane, "ReconcileReported")] == ["vehicle:v1"] * 2
        # The same report over HTTP later is the same duplicate.
        assert (await plane.ingest.reconcile(first, "vehicle:v1")).value is False

    with_bridge(plane, body)


def test_health_over_mqtt_stores_transitions_only(plane: ControlPlane) -> None:
    def statuses() -> list[str]:
        return [e.status for e in events(plane, "HealthChanged")]

    async def body(vehicle: aiomqtt.Client) -> None:
        sent = [
            health_report("v1", "h1", HealthStatus.HEALTHY),
            health_report("v1", "h2", HealthStatus.HEALTHY),
            health_report("v1", "h3", HealthStatus.UNHEALTHY),
        ]
        for report in sent:
            await vehicle.publish(topic("v1", Leaf.REPORTS_HEALTH), payload(report), qos=1)
        await until(lambda: "unhealthy" in statuses(), "the unhealthy transition")
        assert statuses() == ["healthy", "unhealthy"]

    with_bridge(plane, body)


def test_presence_online_then_the_last_will_offline(plane: ControlPlane) -> None:
    """A real vehicle-side client (mosquitto_pub) with a retained Last Will, killed
    without a DISCONNECT: the broker publishes the will, the cloud stores offline."""
    binary = shutil.which("mosquitto_pub")
    if binary is None:
        unavailable("mosquitto_pub not found")
    assert binary is not None
    url = plane.settings.mqtt_url or ""
    port = url.rsplit(":", 1)[1]
    presence = topic("v1", Leaf.PRESENCE)
    will = payload(
        Presence(schema="muto.presence.v1", vehicle_id="v1", state=PresenceState.OFFLINE)
    )
    online = payload(
        Presence(
            schema="muto.presence.v1",
            vehicle_id="v1",
            state=PresenceState.ONLINE,
            at=datetime.now(UTC),
        )
    )

    def changes() -> list[tuple[str, str | None]]:
        return [(e.state, e.at) for e in events(plane, "PresenceChanged")]

    async def body(_: aiomqtt.Client) -> None:
        agent = subprocess.Popen(
            [binary, "-p", port, "-i", "v1", "-q", "1", "-r", "-t", presence, "-l",
             "--will-topic", presence, "--will-payload", will.decode(),
             "--will-qos", "1", "--will-retain"],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert agent.stdin is not None
            agent.stdin.write(online + b"\n")  # -l: one message per line, stays connected
            agent.stdin.flush()
            await until(lambda: changes(), "online to be stored")
        finally:
            agent.kill()  # no DISCONNECT: the broker sends the Last Will
            agent.wait()
            assert agent.stdin is not None
            agent.stdin.close()
        await until(lambda: len(changes()) == 2, "the Last Will to be stored")
        (state, at), (last_state, last_at) = changes()
        assert (state, last_state, last_at) == ("online", "offline", None)
        assert at is not None and datetime.fromisoformat(at).tzinfo is not None

    with_bridge(plane, body)


def test_live_heartbeats_move_the_heartbeat_table_not_the_log(plane: ControlPlane) -> None:
    """Issue #14 item 15: every online presence heard live is a heartbeat (the cloud's
    time, the announced interval); the retained copy replayed on subscribing is not (a
    frozen agent's last word would look fresh); only the change to online is an event.
    Silent for three announced intervals, the vehicle is shown stale."""
    url = plane.settings.mqtt_url or ""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    presence = topic("v1", Leaf.PRESENCE)

    def beat() -> bytes:
        now = datetime.now(UTC)
        return payload(
            Presence(
                schema="muto.presence.v1",
                vehicle_id="v1",
                state=PresenceState.ONLINE,
                at=now,
                heartbeat_s=0.5,
            )
        )

    async def retain_one() -> None:
        async with aiomqtt.Client(host, int(port), identifier="old-agent") as old:
            await old.publish(presence, beat(), qos=1, retain=True)

    asyncio.run(retain_one())

    def changes() -> int:
        return len(events(plane, "PresenceChanged"))

    async def body(vehicle: aiomqtt.Client) -> None:
        await until(lambda: changes() == 1, "the retained online presence to be stored")
        plane.ingest.flush()
        assert plane.queries.vehicle("v1").last_heartbeat_at is None  # a replay, not news
        for _ in range(3):
            await vehicle.publish(presence, beat(), qos=1, retain=True)

        def heard() -> Any:
            plane.ingest.flush()
            return plane.queries.vehicle("v1").last_heartbeat_at

        await until(heard, "the live heartbeats to be heard")

    with_bridge(plane, body)
    plane.ingest.flush()
    seen = plane.queries.vehicle("v1")
    assert (seen.presence, changes()) == ("online", 1)
    heard = datetime.fromisoformat(seen.last_heartbeat_at)
    assert datetime.now(UTC) - heard < timedelta(seconds=1.5)
    until_stale = heard + timedelta(seconds=3 * 0.5) - datetime.now(UTC)
    time.sleep(max(0.0, until_stale.total_seconds()) + 0.2)
    seen = plane.queries.vehicle("v1")
    assert (seen.presence, seen.last_heartbeat_at, changes()) == ("stale", heard.isoformat(), 1)


def test_refused_messages_are_logged_and_the_loop_goes_on(
    plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="muto.mqtt")

    async def body(vehicle: aiomqtt.Client) -> None:
        reconcile = Leaf.REPORTS_RECONCILE
        # v1's topic, a report naming v2: the ACL bound the sender to v1, so it is dropped.
        forged = payload(reconcile_report("v2", "forged"))
        await vehicle.publish(topic("v1", reconcile), forged, qos=1)
        await vehicle.publish(topic("v9", reconcile), payload(reconcile_report("v9", "u")), qos=1)
        await vehicle.publish(topic("v1", reconcile), b"{not json", qos=1)
        await vehicle.publish(topic("v1", reconcile), b'{"reportId": "x"}', qos=1)
        await vehicle.publish(topic("v1", reconcile), payload(reconcile_report("v1", "ok")), qos=1)
        await until(lambda: report_ids(plane), "the valid report to be stored")

    with_bridge(plane, body)
    assert report_ids(plane) == [("v1", "ok")]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 4, dropped
    assert "payload vehicleId 'v2' differs from the topic's 'v1'" in dropped[0]
    assert "'v9' is not registered" in dropped[1]
    assert "malformed JSON" in dropped[2]
    assert "missing required field `schema`" in dropped[3]  # the first one missing


def test_a_heartbeat_interval_out_of_range_is_dropped_with_its_reason(
    plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue: one vehicle's `heartbeatS: 1e14` (spec-valid then) was kept and overflowed
    every read of the fleet. It is bounded as AgentConfig's now: the message is dropped,
    logged with the field, and nothing of it is stored."""
    caplog.set_level(logging.WARNING, logger="muto.mqtt")
    at = datetime.now(UTC).isoformat()

    def online(vehicle_id: str, heartbeat: str) -> bytes:
        return (
            f'{{"schema":"muto.presence.v1","vehicleId":"{vehicle_id}","state":"online",'
            f'"at":"{at}","heartbeatS":{heartbeat}}}'
        ).encode()

    def changed() -> list[str]:
        return [e.vehicle_id for e in events(plane, "PresenceChanged")]

    async def body(vehicle: aiomqtt.Client) -> None:
        await vehicle.publish(topic("v1", Leaf.PRESENCE), online("v1", "1e14"), qos=1)
        await vehicle.publish(topic("v2", Leaf.PRESENCE), online("v2", "3600"), qos=1)
        await until(lambda: changed(), "v2's presence to be stored")  # handled in order

    with_bridge(plane, body)
    plane.ingest.flush()
    assert changed() == ["v2"]
    assert plane.queries.vehicle("v1").last_heartbeat_at is None
    assert plane.queries.vehicle("v2").last_heartbeat_at is not None
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1, dropped
    assert "dropped presence" in dropped[0] and "`$.heartbeatS`" in dropped[0]
    assert "<= 3600" in dropped[0]


def test_reports_sent_while_the_cloud_was_down_arrive_when_it_returns(
    plane: ControlPlane,
) -> None:
    url = plane.settings.mqtt_url or ""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)

    async def main() -> None:
        bridge = Bridge(plane, backoff=FAST)
        await bridge.start()  # the first connect creates the persistent session
        await until(lambda: bridge.connected, "the first session")
        await bridge.stop()
        async with aiomqtt.Client(host, int(port)) as vehicle:
            report = payload(reconcile_report("v1", "while-away"))
            await vehicle.publish(topic("v1", Leaf.REPORTS_RECONCILE), report, qos=1)
        bridge = Bridge(plane, backoff=FAST)
        await bridge.start()
        try:
            await until(lambda: report_ids(plane), "the queued report")
        finally:
            await bridge.stop()
        assert report_ids(plane) == [("v1", "while-away")]

    asyncio.run(main())
