"""The shipped broker config (deploy/mosquitto) on a real Mosquitto: a vehicle reads only
its own notify, cannot report for another vehicle, and anonymous clients are refused.

The config is used as shipped except for its paths and port (a temporary directory);
the password file is made by the docs/mqtt.md snippet (deploy/mosquitto/add-users.sh).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiomqtt.exceptions import MqttConnectError

from muto.cloud.mqtt.bridge import Bridge
from muto.cloud.settings import Settings
from muto.domain.messages import DesiredNotify, Leaf, Presence, PresenceState, vehicle_topic
from tests.conftest import Mosquitto
from tests.support.mqtt_watch import (
    FAST,
    TENANT,
    Watcher,
    events,
    notify_topic,
    open_fleet,
    payload,
    settings_for,
)
from tests.support.secured_broker import USERS, client, secured_broker
from tests.support.spine import reconcile_report
from tests.support.waits import until

pytestmark = pytest.mark.mqtt


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    (tmp_path / "broker").mkdir()
    broker = secured_broker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def notify(vehicle_id: str) -> bytes:
    url = f"http://cloud.test/desired-states/latest?vehicleId={vehicle_id}"
    return payload(
        DesiredNotify(
            schema="muto.desired-notify.v1",
            vehicle_id=vehicle_id,
            revision="dsr_1",
            sequence=1,
            url=url,
        )
    )


def test_a_vehicle_reads_only_its_own_notify(broker: Mosquitto) -> None:
    async def main() -> None:
        async with client(broker, "muto-cloud") as cloud:
            for vehicle_id in ("v2", "v1"):
                await cloud.publish(notify_topic(vehicle_id), notify(vehicle_id), 1, True)
        creds = {"username": "v1", "password": USERS["v1"]}
        url = f"mqtt://127.0.0.1:{broker.port}"
        # B's topic first, then a wildcard, then A's own: retained messages arrive in
        # subscription order, so once A's own has arrived B's would have come first.
        filters = (notify_topic("v2"), notify_topic("+"), notify_topic("v1"))
        async with Watcher(url, *filters, **creds) as v1:
            await v1.wait(lambda: len(v1.notifies("v1")) == 2, "v1's notify, twice")
        assert v1.on(notify_topic("v2")) == []
        assert {m.topic.value for m in v1.messages} == {notify_topic("v1")}

    asyncio.run(main())


def test_a_vehicle_cannot_publish_into_another_vehicles_subtree(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The cloud's own bridge, logged in as muto-cloud, receives only what the ACL let
    through: v1's reports and presence under v1, nothing v1 sent under v2."""
    url = f"mqtt://muto-cloud:{USERS['muto-cloud'].replace(' ', '%20')}@127.0.0.1:{broker.port}"
    cp = open_fleet(settings_for("sqlite", tmp_path, url, None), "v1", "v2")

    def stored() -> list[tuple[str, str]]:
        return [(e.vehicle_id, e.report.report_id) for e in events(cp, "ReconcileReported")]

    async def main() -> None:
        bridge = Bridge(cp, backoff=FAST)
        await bridge.start()
        try:
            await until(lambda: bridge.connected, "the cloud to log in")
            async with client(broker, "v1") as v1:
                as_v2 = Presence(
                    schema="muto.presence.v1", vehicle_id="v2", state=PresenceState.ONLINE
                )
                await v1.publish(vehicle_topic(TENANT, "v2", Leaf.PRESENCE), payload(as_v2), 1)
                forged = payload(reconcile_report("v2", "forged"))
                await v1.publish(vehicle_topic(TENANT, "v2", Leaf.REPORTS_RECONCILE), forged, 1)
                await v1.publish(notify_topic("v2"), notify("v2"), 1, True)
                own = payload(reconcile_report("v1", "own"))
                await v1.publish(vehicle_topic(TENANT, "v1", Leaf.REPORTS_RECONCILE), own, 1)
            # One publisher's messages arrive in order: had the broker passed the forged
            # ones, they would be stored before "own".
            await until(stored, "v1's own report")
        finally:
            await bridge.stop()
        assert stored() == [("v1", "own")]
        assert events(cp, "PresenceChanged") == []
        assert not [r for r in caplog.records if "dropped" in r.getMessage()]

    try:
        asyncio.run(main())
    finally:
        cp.close()


def test_anonymous_clients_and_wrong_passwords_are_refused(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="muto.mqtt")

    async def main() -> None:
        for user, password in ((None, None), ("v1", "wrong"), ("nobody", "x")):
            with pytest.raises(MqttConnectError, match="authori"):
                async with client(broker, user, password):
                    pass
        # The bridge with bad credentials keeps retrying and says so; it never crashes.
        url = f"mqtt://muto-cloud:wrong@127.0.0.1:{broker.port}"
        cp = open_fleet(settings_for("sqlite", tmp_path, url, None), "v1")
        bridge = Bridge(cp, backoff=FAST)
        await bridge.start()
        try:
            await until(
                lambda: sum("broker link down" in r.getMessage() for r in caplog.records) >= 2,
                "two refused attempts",
            )
            assert not bridge.connected
        finally:
            await bridge.stop()
            cp.close()

    asyncio.run(main())


def test_the_broker_refuses_a_message_over_the_http_body_limit(broker: Mosquitto) -> None:
    """#14 item 12: one size limit on every ingress path. The shipped config caps a
    message at the HTTP body limit, so the cloud never receives a bigger one."""
    limit = Settings().max_body_bytes
    assert re.search(rf"^message_size_limit {limit}$", broker.config.read_text(), re.M)
    reports = vehicle_topic(TENANT, "v1", Leaf.REPORTS_RECONCILE)

    async def main() -> None:
        async with client(broker, "muto-cloud") as cloud:
            await cloud.subscribe(vehicle_topic(TENANT, "+", Leaf.REPORTS_RECONCILE), qos=1)
            async with client(broker, "v1") as v1:
                await v1.publish(reports, b"x" * (limit + 1), qos=1)
                await v1.publish(reports, b"x" * limit, qos=1)
            received = []
            async with asyncio.timeout(10):
                async for message in cloud.messages:
                    received.append(len(message.payload))  # type: ignore[arg-type]
                    break
            assert received == [limit]

    asyncio.run(main())
