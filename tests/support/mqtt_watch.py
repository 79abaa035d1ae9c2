"""Shared pieces of the MQTT bridge tests: a control plane
with a registered fleet and a release, assignments, a watching MQTT client, and waits
that end when a condition holds (never timed assertions: the timeout only bounds a hang).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Assignment, assign_desired_state
from muto.cloud.mqtt.link import Backoff
from muto.cloud.settings import Settings
from muto.domain.messages import DesiredNotify, Leaf, vehicle_topic
from muto.domain.wire import decode
from tests.support.releases import signed_release
from tests.support.spine import (
    cause,
    desired_request,
    postgres_settings,
    register_fleet,
    registration,
    sqlite_settings,
)

TENANT = "default"
PUBLIC_URL = "http://cloud.test:8080"
FAST = Backoff(base_s=0.05, cap_s=0.5)  # reconnect quickly in tests
WAIT_S = 20.0
RELEASE = signed_release("core", "1.0.0")


def settings_for(backend: str, tmp_path: Path, broker_url: str, pg_url: str | None) -> Settings:
    base = (
        postgres_settings(pg_url, tmp_path)
        if backend == "postgres" and pg_url
        else sqlite_settings(tmp_path)
    )
    return replace(base, mqtt_url=broker_url, public_url=PUBLIC_URL, tenant=TENANT)


def open_fleet(settings: Settings, *vehicle_ids: str) -> ControlPlane:
    """A control plane with `vehicle_ids` registered and the release `core@1.0.0`."""
    cp = ControlPlane.open(settings)
    cp.execute(RELEASE.register())
    register_fleet(cp, [registration(v) for v in vehicle_ids])
    return cp


async def assign(cp: ControlPlane, *vehicle_ids: str) -> Assignment:
    request = desired_request("model=m3", RELEASE)
    written = await cp.write(assign_desired_state(request, list(vehicle_ids), cause(), cp.sign))
    return written.value


def notify_topic(vehicle_id: str) -> str:
    return vehicle_topic(TENANT, vehicle_id, Leaf.DESIRED_NOTIFY)


def expected_url(vehicle_id: str) -> str:
    return f"{PUBLIC_URL}/desired-states/latest?vehicleId={vehicle_id}"


def events(cp: ControlPlane, name: str) -> list[Any]:
    """Every stored event of type `Vehicle.<name>`, in log order."""
    topic = f"muto.domain.model.vehicle:Vehicle.{name}"
    found = cp.log.recorder.select_notifications(start=0, limit=100_000, topics=[topic])
    return [cp.log.mapper.to_domain_event(n) for n in found]


class Watcher:
    """An MQTT client that records every message on its filters, in arrival order (the
    one MQTT watcher of the suite; `client` publishes too)."""

    def __init__(self, url: str, *filters: str, root: str = "", **client: Any) -> None:
        """`root`: a topic prefix that `bodies` and `retained` leave out (a subtree's
        leaves: "presence", "agent/state")."""
        self.root = f"{root}/" if root else ""
        host, port = url.removeprefix("mqtt://").rsplit(":", 1)
        self.client = aiomqtt.Client(host, int(port), **client)
        self.filters = filters
        self.messages: list[aiomqtt.Message] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        await self.client.__aenter__()
        for f in self.filters:
            await self.client.subscribe(f, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        async for message in self.client.messages:
            self.messages.append(message)
            self._arrived.set()

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if m.topic.value == topic]

    def bodies(self, leaf: str) -> list[Any]:
        """The JSON payloads on `root/leaf`, in arrival order (None for an empty one: a
        cleared retained message)."""
        found = self.on(self.root + leaf)
        return [json.loads(bytes(m.payload)) if m.payload else None for m in found]  # type: ignore[arg-type]

    def retained(self) -> set[str]:
        """The leaves (topics below `root`) that delivered a retained message."""
        return {m.topic.value.removeprefix(self.root) for m in self.messages if m.retain}

    def notifies(self, vehicle_id: str) -> list[DesiredNotify]:
        on_topic = self.on(notify_topic(vehicle_id))
        return [decode(bytes(m.payload), DesiredNotify) for m in on_topic]  # type: ignore[arg-type]

    async def wait(self, condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            self._arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"gave up waiting for {what}; got {self.messages}")
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                continue
        return value


def payload(struct: msgspec.Struct) -> bytes:
    return msgspec.json.encode(struct)
