"""Scenario 13, MQTT: on Mosquitto with the shipped config and ACL (deploy/mosquitto, as
tests/integration/test_mqtt_acl.py sets it up), vehicle v1 publishes into every leaf of
vehicle v2's subtree, retained and not, and subscribes to v2's topics and to wildcards.
The broker passes none of it: a client logged in as the cloud (it reads `muto/#`) sees
only v1's own messages, v2's retained notify is untouched, and v1 reads nothing of v2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from muto.domain.messages import Leaf, vehicle_topic
from tests.conftest import Mosquitto
from tests.faults.runs import runs
from tests.support.mqtt_watch import TENANT, Watcher, notify_topic
from tests.support.secured_broker import USERS, client, secured_broker

pytestmark = pytest.mark.mqtt


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    (tmp_path / "broker").mkdir()
    secured = secured_broker(tmp_path / "broker")
    secured.start()
    try:
        yield secured
    finally:
        secured.stop()


@pytest.mark.parametrize("count", runs(1, 25))
def test_a_vehicle_writes_and_reads_nothing_of_another(count: int, broker: Mosquitto) -> None:
    cloud_login = {"username": "muto-cloud", "password": USERS["muto-cloud"]}
    v1_login = {"username": "v1", "password": USERS["v1"]}
    own = vehicle_topic(TENANT, "v1", Leaf.REPORTS_HEALTH)
    forged = 0

    async def main() -> None:
        nonlocal forged
        async with client(broker, "muto-cloud") as cloud:
            await cloud.publish(notify_topic("v2"), b'{"for": "v2"}', qos=1, retain=True)
            await cloud.publish(vehicle_topic(TENANT, "v2", Leaf.CMD_REFRESH), b"{}", qos=1)
        filters = ("muto/#", "#", notify_topic("v2"), vehicle_topic(TENANT, "v2", "#"))
        async with (
            Watcher(broker.url, "muto/#", **cloud_login) as seen_by_cloud,
            Watcher(broker.url, *filters, **v1_login) as seen_by_v1,
            client(broker, "v1") as v1,
        ):
            for n in range(count):
                for leaf in Leaf:
                    for retain in (False, True):
                        topic = vehicle_topic(TENANT, "v2", leaf)
                        await v1.publish(topic, f'{{"forged": {n}}}'.encode(), 1, retain)
                        forged += 1
                # one publisher's messages arrive in order: the forged ones would come first
                await v1.publish(own, f'{{"own": {n}}}'.encode(), qos=1)
                await seen_by_cloud.wait(lambda n=n: len(seen_by_cloud.on(own)) == n + 1, "own")
            await asyncio.sleep(0.2)  # (nothing to wait for: a late forged message would show)
            under_v2 = [m for m in seen_by_cloud.messages if "/vehicles/v2/" in m.topic.value]
            assert [(m.topic.value, bytes(m.payload)) for m in under_v2] == [  # type: ignore[arg-type]
                (notify_topic("v2"), b'{"for": "v2"}')  # the retained notify, as the cloud left it
            ]
            assert {m.topic.value for m in seen_by_v1.messages} <= {own}
        async with Watcher(broker.url, notify_topic("v2"), **cloud_login) as later:
            await later.wait(lambda: later.on(notify_topic("v2")), "the retained notify")
            assert bytes(later.messages[0].payload) == b'{"for": "v2"}'  # type: ignore[arg-type]

    asyncio.run(main())
    print(f"\nscenario 13 MQTT: {forged} publishes by v1 into v2's subtree (every leaf, "
          f"retained and not), 0 passed the broker; v1 read nothing of v2")  # fmt: skip
