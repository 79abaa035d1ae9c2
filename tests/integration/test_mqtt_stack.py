"""The whole cloud once: `create_app(..., extensions=[bridge_factory])` served by uvicorn.
/healthz follows the broker link through an outage while the API keeps serving, and a
notify's URL is the address that serves the vehicle's desired state."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from muto.cloud.api.app import create_app
from muto.cloud.mqtt import bridge_factory
from tests.conftest import Mosquitto, free_port
from tests.support.mqtt_watch import (
    Watcher,
    notify_topic,
    open_fleet,
    settings_for,
)
from tests.support.waits import until

pytestmark = pytest.mark.mqtt
DESIRED = {"target": {"selector": "model=m3"}, "stack": {"name": "core", "version": "1.0.0"}}


def test_healthz_follows_the_broker_and_the_api_serves_through_an_outage(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = replace(
        settings_for("sqlite", tmp_path, mosquitto.url, None), public_url=base, auth=False
    )
    open_fleet(settings, "v1").close()  # the served app opens the same database
    app = create_app(settings, extensions=[bridge_factory])
    http = httpx.Client(base_url=base, timeout=10)

    def mqtt_connected() -> Any:
        return http.get("/healthz").json()["data"]["mqttConnected"]

    def assign() -> int:
        created = http.post("/desired-states", json=DESIRED)
        assert created.status_code == 201, created.text
        return int(created.json()["data"]["vehicles"]["v1"])

    async def main() -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            await until(lambda: server.started, "uvicorn to start")
            await until(lambda: mqtt_connected() is True, "mqttConnected true")
            async with Watcher(mosquitto.url, notify_topic("v1")) as vehicle:
                assert await asyncio.to_thread(assign) == 1
                (notify,) = await vehicle.wait(lambda: vehicle.notifies("v1"), "the notify")
            fetched = await asyncio.to_thread(http.get, notify.url)
            assert fetched.status_code == 200
            assert fetched.json()["metadata"]["sequence"] == notify.sequence == 1

            mosquitto.stop()
            await until(lambda: mqtt_connected() is False, "mqttConnected false")
            assert await asyncio.to_thread(assign) == 2  # the API serves without a broker

            mosquitto.start()  # without persistence: the retained notify is gone
            await until(lambda: mqtt_connected() is True, "mqttConnected true again")
            async with Watcher(mosquitto.url, notify_topic("v1")) as vehicle:
                await vehicle.wait(lambda: vehicle.notifies("v1"), "the missed notify")
            assert [n.sequence for n in vehicle.notifies("v1")] == [2]
        finally:
            server.should_exit = True
            await serving

    try:
        asyncio.run(main())
    finally:
        http.close()
