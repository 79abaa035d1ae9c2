"""Notify fan-out: the cloud's MQTT notifier publishing a retained desired/notify for each
of 10,000 vehicles after one assignment, against a bare aiomqtt publisher."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiomqtt

from bench import Result
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, assign_desired_state, register_release, register_vehicle
from muto.cloud.mqtt.bridge import Bridge
from muto.cloud.settings import Settings
from muto.domain.desired import DesiredStateRequest, StackRef, Target
from muto.domain.requests import VehicleRegistration
from muto.sim.demo import release
from muto.sim.services import MosquittoBroker
from muto.trust import Signer, manifest_digest, sign_release

TITLE = "MQTT notify fan-out"
VEHICLES = 10_000
TOPICS = "muto/default/vehicles/+/desired/notify"
NOTES = """\
One assignment (one transaction) gives 10,000 vehicles a new revision; the figure is the
time from its commit until a subscriber to `muto/default/vehicles/+/desired/notify` has
received every retained notify (QoS 1), and then the time for a subscriber connecting
afterwards to receive all 10,000 retained messages from the broker (what vehicles that
were offline get on reconnect). The baseline publishes the same number of retained QoS 1
messages with a bare aiomqtt client in one loop. The figure includes projecting the
10,000 assignments: a notify goes out only once the view serves what it announces.
Per-vehicle delivery to 10,000 separate connections, with the fetch and report that
follow, is in the rollout figures."""


async def count(url: str, expected: int, ready: asyncio.Event) -> float:
    """Subscribe, signal ready, return the time until `expected` messages arrived."""
    host, port = url.removeprefix("mqtt://").split(":")
    seen: set[str] = set()
    async with aiomqtt.Client(host, int(port), max_queued_incoming_messages=0) as client:
        await client.subscribe(TOPICS, qos=1)
        ready.set()
        async for message in client.messages:
            seen.add(str(message.topic))
            if len(seen) >= expected:
                return time.monotonic()
    raise RuntimeError("subscription ended early")


async def bare_publisher(url: str) -> float:
    host, port = url.removeprefix("mqtt://").split(":")
    ready = asyncio.Event()
    receiver = asyncio.create_task(count(url, VEHICLES, ready))
    await ready.wait()
    started = time.monotonic()
    async with aiomqtt.Client(host, int(port)) as client:
        for i in range(VEHICLES):
            await client.publish(
                f"muto/default/vehicles/bare-{i}/desired/notify",
                b'{"revision":"x"}',
                qos=1,
                retain=True,
            )
    return await receiver - started


async def notifier(url: str, data_dir: Path) -> tuple[float, float, float]:
    plane = ControlPlane.open(
        Settings(data_dir=data_dir, mqtt_url=url, public_url="http://127.0.0.1:8080")
    )
    cause = Cause.of("bench")
    ids = [f"v{i:05d}" for i in range(VEHICLES)]
    futures = [
        plane.writer.submit(
            register_vehicle(
                VehicleRegistration(
                    vehicle_id=v,
                    labels={"fleet": "bench"},
                    attributes={"os": "ubuntu-22.04", "rosDistro": "humble"},
                ),
                cause,
            )
        )
        for v in ids
    ]
    for future in futures:
        future.result()
    r = release("1.0.0")
    plane.execute(
        register_release(r, manifest_digest(r), sign_release(r, [Signer.generate()]), cause)
    )
    bridge = Bridge(plane)
    await bridge.start()
    ready = asyncio.Event()
    receiver = asyncio.create_task(count(url, VEHICLES, ready))
    await ready.wait()
    request = DesiredStateRequest(
        target=Target(selector="fleet=bench"), stack=StackRef(name=r.stack_name, version=r.version)
    )
    started = time.monotonic()
    # The writer's commit alone (plane.execute would also wait for the views).
    await asyncio.to_thread(
        plane.writer.execute, assign_desired_state(request, ids, cause, plane.sign)
    )
    committed = time.monotonic() - started
    received = await receiver - started
    ready_again = asyncio.Event()
    late = time.monotonic()
    late_received = await count(url, VEHICLES, ready_again) - late
    await bridge.stop()
    plane.close()
    return committed, received, late_received


async def measure() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="muto-bench-notify-") as tmp:
        broker = MosquittoBroker(Path(tmp))
        await broker.start()
        try:
            bare = await bare_publisher(broker.url)
            committed, received, late = await notifier(broker.url, Path(tmp) / "cloud")
        finally:
            await broker.stop()
    workload = f"{VEHICLES:,} vehicles, Mosquitto on loopback, SQLite control plane"
    return [
        Result(
            "assignment to every retained notify received",
            received,
            "s",
            f"{workload}; of which the assignment itself (10,000 signed documents, one "
            f"transaction): {committed:.1f} s",
            "bare aiomqtt publisher, same count",
            bare,
        ),
        Result(
            "late subscriber receives every retained notify",
            late,
            "s",
            workload,
            "bare aiomqtt publisher, same count",
            bare,
        ),
    ]


def run() -> list[Result]:
    return asyncio.run(measure())
