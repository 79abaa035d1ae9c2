"""`muto cloud serve` on PostgreSQL with its MQTT bridge running, as a new user runs it
(issue 15): `POST /rollouts` never answered, because the notifier's lease and the
rollout-start lock shared one advisory lock key and the notifier holds its lease for
as long as it runs. The multi-process tests all ran `--no-mqtt`, so nothing caught it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import httpx
import pytest

from muto.cloud.seed import demo_vehicles
from muto.domain.messages import Leaf, vehicle_topic
from tests.conftest import Mosquitto
from tests.support.api_server import ApiServer
from tests.support.waits import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]


def test_a_rollout_starts_with_the_mqtt_bridge_on_postgres(
    tmp_path: Path, postgres_url: str, mosquitto: Mosquitto
) -> None:
    cloud = ApiServer(tmp_path / "cloud", postgres_url, mqtt_url=mosquitto.url)
    cloud.cli("seed")
    operator = cloud.cli("token", "create", "--operator").stdout.splitlines()[0].strip()
    cloud.start(wait="/healthz")
    try:
        with httpx.Client(
            base_url=cloud.url, headers={"Authorization": f"Bearer {operator}"}, timeout=30
        ) as http:
            # The notifier holds its lease once it has published the seeded notifies.
            vehicle = demo_vehicles()[0].vehicle_id
            eventually(lambda: asyncio.run(retained_notify(mosquitto, vehicle)), "a notify")
            body = {"selector": "model=vehicle-v3", "stack": "autonomy-core", "version": "1.1.0"}
            started = http.post("/rollouts", json=body)
            assert started.status_code == 201, started.text
            rollout = started.json()["data"]
            assert rollout["state"] == "canary"
            assert http.get(f"/rollouts/{rollout['rolloutId']}").status_code == 200
    finally:
        assert cloud.stop() == 0, cloud.tail()
    assert cloud.tracebacks() == []


async def retained_notify(broker: Mosquitto, vehicle_id: str) -> bool:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(vehicle_topic("default", vehicle_id, Leaf.DESIRED_NOTIFY), qos=1)
        try:
            async with asyncio.timeout(1.0):  # a retained message comes at once, or never
                async for _ in client.messages:
                    return True
        except TimeoutError:
            return False
    return False
