"""What vehicles say about themselves over MQTT reaches the inventory: the retained
`agent/metadata` and `agent/components` snapshots are kept (latest only, for registered
vehicles that publish under their own id), and a refresh is answered by request id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.mqtt.bridge import Bridge
from muto.domain.gates import DEFAULT_FLOOR, SafetyFloor
from muto.domain.messages import (
    AgentComponents,
    AgentMetadata,
    AgentMetadataV1,
    Component,
    Leaf,
    RefreshRequest,
    RefreshResult,
    vehicle_topic,
)
from muto.domain.wire import decode, to_builtins
from tests.conftest import Mosquitto
from tests.support.mqtt_watch import (
    FAST,
    TENANT,
    open_fleet,
    payload,
    settings_for,
)
from tests.support.waits import until

pytestmark = pytest.mark.mqtt
ARCHIVE = Component(digest="sha256:" + "a" * 64, type="archive", ref="artifacts/x", role="active")


@pytest.fixture
def plane(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[ControlPlane]:
    cp = open_fleet(settings_for("sqlite", tmp_path, mosquitto.url, None), "v1", "v2")
    yield cp
    cp.close()


def topic(vehicle_id: str, leaf: Leaf) -> str:
    return vehicle_topic(TENANT, vehicle_id, leaf)


def metadata(
    vehicle_id: str, version: str = "1.2.3", floor: SafetyFloor = DEFAULT_FLOOR
) -> AgentMetadata:
    return AgentMetadata(
        schema="muto.agent-metadata.v2",
        vehicle_id=vehicle_id,
        agent_version=version,
        os="ubuntu-22.04",
        runtime="process",
        safety_floor=floor,
    )


def components(vehicle_id: str) -> AgentComponents:
    return AgentComponents(
        schema="muto.agent-components.v1", vehicle_id=vehicle_id, components=[ARCHIVE]
    )


def refresh_result(request_id: str, ok: bool, updated: tuple[str, ...] = ()) -> RefreshResult:
    return RefreshResult(
        schema="muto.refresh-result.v1",
        request_id=request_id,
        ok=ok,
        snapshots_updated=list(updated),
    )


def test_snapshots_are_kept_latest_only_and_only_for_their_own_registered_vehicle(
    plane: ControlPlane,
) -> None:
    async def main() -> None:
        listener = Bridge(plane).listener
        await listener.handle(topic("v1", Leaf.AGENT_METADATA), payload(metadata("v1", "1.0.0")))
        await listener.handle(topic("v1", Leaf.AGENT_METADATA), payload(metadata("v1", "1.0.1")))
        await listener.handle(topic("v1", Leaf.AGENT_COMPONENTS), payload(components("v1")))
        # another vehicle's id in the payload, an unregistered vehicle, garbage: dropped
        await listener.handle(topic("v2", Leaf.AGENT_METADATA), payload(metadata("v1", "6.6.6")))
        await listener.handle(topic("ghost", Leaf.AGENT_METADATA), payload(metadata("ghost")))
        await listener.handle(topic("v2", Leaf.AGENT_COMPONENTS), b"{not json")
        assert listener.dropped == 3

    asyncio.run(main())
    said = to_builtins(plane.snapshots.reported(["v1", "v2", "ghost"]))
    assert set(said) == {"v1"}
    assert said["v1"]["agent"] == {
        "agentVersion": "1.0.1",
        "model": None,
        "os": "ubuntu-22.04",
        "rosDistro": None,
        "runtime": "process",
        "safetyFloor": {
            "requireVehicleStationary": True,
            "denyIfAutonomousMode": True,
            "requireBatteryPctMin": 0,
        },
    }
    assert said["v1"]["components"] == [
        {
            "digest": ARCHIVE.digest,
            "type": "archive",
            "ref": "artifacts/x",
            "distName": None,
            "role": "active",
        }
    ]


def test_a_snapshot_without_its_schema_is_dropped_as_a_report_is(
    plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    """Rule 5 of spec/mqtt-topics.md: snapshots once took `schema` as a default, so a
    schemaless `agent/metadata` was stored while a schemaless `reports/health` was
    dropped. Both snapshot kinds are dropped now, through the bridge's batched path."""
    caplog.set_level(logging.WARNING, logger="muto.mqtt")
    host, port = (plane.settings.mqtt_url or "").removeprefix("mqtt://").rsplit(":", 1)

    def bare(snapshot: AgentMetadata | AgentComponents) -> bytes:
        body = to_builtins(snapshot)
        del body["schema"]
        return msgspec.json.encode(body)

    async def main() -> None:
        bridge = Bridge(plane, backoff=FAST)
        await bridge.start()
        try:
            await until(lambda: bridge.connected, "the bridge to subscribe")
            async with aiomqtt.Client(host, int(port), identifier="v1") as client:
                for vehicle_id, leaf, said in (
                    ("v1", Leaf.AGENT_METADATA, bare(metadata("v1", "NO-SCHEMA"))),
                    ("v1", Leaf.AGENT_COMPONENTS, bare(components("v1"))),
                    ("v2", Leaf.AGENT_METADATA, payload(metadata("v2", "2.0.0"))),
                ):
                    await client.publish(topic(vehicle_id, leaf), said, qos=1)
            listener = bridge.listener
            await until(lambda: listener.stored + listener.dropped >= 3, "all three")
            assert (listener.stored, listener.dropped) == (1, 2)
        finally:
            await bridge.stop()

    asyncio.run(main())
    assert set(plane.snapshots.reported(["v1", "v2"])) == {"v2"}
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2, dropped
    assert all("missing required field `schema`" in line for line in dropped)


def test_a_refresh_is_answered_by_its_own_request_id(plane: ControlPlane) -> None:
    """A vehicle stand-in answers `cmd/refresh` as the agent does: snapshots first, then
    the result with the request id. Another id, or another vehicle's topic, is ignored."""
    host, port = (plane.settings.mqtt_url or "").removeprefix("mqtt://").rsplit(":", 1)

    async def vehicle(ready: asyncio.Event) -> None:
        async with aiomqtt.Client(host, int(port), identifier="v1-agent") as client:
            await client.subscribe(topic("v1", Leaf.CMD_REFRESH), qos=1)
            ready.set()
            async for message in client.messages:
                asked = decode(bytes(message.payload), RefreshRequest)
                await client.publish(
                    topic("v1", Leaf.AGENT_METADATA),
                    payload(metadata("v1", "2.0.0")),
                    qos=1,
                    retain=True,
                )
                wrong = refresh_result("someone-else", ok=False)
                await client.publish(topic("v1", Leaf.EVT_REFRESH_RESULT), payload(wrong), qos=1)
                await client.publish(
                    topic("v2", Leaf.EVT_REFRESH_RESULT),
                    payload(refresh_result(asked.request_id, ok=False)),
                    qos=1,
                )
                answer = refresh_result(asked.request_id, ok=True, updated=("agent/metadata",))
                await client.publish(topic("v1", Leaf.EVT_REFRESH_RESULT), payload(answer), qos=1)
                return

    async def main() -> None:
        bridge = Bridge(plane, backoff=FAST)
        await bridge.start()
        try:
            await until(lambda: bridge.connected, "the bridge to subscribe")
            ready = asyncio.Event()
            stand_in = asyncio.create_task(vehicle(ready))
            await ready.wait()
            result = await bridge.refresh("v1", 20)
            assert result is not None
            assert (result.ok, result.snapshots_updated) == (True, ["agent/metadata"])
            assert result.request_id.startswith("refresh-")
            await stand_in
            assert await bridge.refresh("v2", 0.5) is None  # nobody answers for v2
            assert bridge.listener.refreshes == {}
        finally:
            await bridge.stop()

    asyncio.run(main())
    agent = plane.snapshots.reported(["v1"])["v1"].agent
    assert agent is not None and agent.agent_version == "2.0.0"


def test_a_burst_of_snapshots_is_stored_together_and_each_refusal_alone(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Snapshots arriving back to back (a fleet re-publishing after a wave) are stored in
    shared transactions: every registered vehicle's latest is kept, the refusals in the
    burst (an unregistered vehicle, another vehicle's id, garbage) are dropped alone."""
    ids = [f"b{n}" for n in range(60)]
    plane = open_fleet(settings_for("sqlite", tmp_path, mosquitto.url, None), *ids)
    host, port = (plane.settings.mqtt_url or "").removeprefix("mqtt://").rsplit(":", 1)

    async def main() -> None:
        bridge = Bridge(plane, backoff=FAST)
        await bridge.start()
        try:
            await until(lambda: bridge.connected, "the bridge to subscribe")
            async with aiomqtt.Client(host, int(port), identifier="burst") as client:
                for n, vehicle_id in enumerate(ids):
                    said = components(vehicle_id)
                    await client.publish(
                        topic(vehicle_id, Leaf.AGENT_COMPONENTS), payload(said), qos=1
                    )
                    if n == 20:
                        await client.publish(
                            topic("ghost", Leaf.AGENT_METADATA), payload(metadata("ghost")), qos=1
                        )
                        await client.publish(
                            topic("b1", Leaf.AGENT_METADATA), payload(metadata("b2")), qos=1
                        )
                        await client.publish(topic("b3", Leaf.AGENT_METADATA), b"{", qos=1)
                for vehicle_id in ids:
                    await client.publish(
                        topic(vehicle_id, Leaf.AGENT_METADATA),
                        payload(metadata(vehicle_id, "9.9.9")),
                        qos=1,
                    )
            listener = bridge.listener
            await until(lambda: listener.stored + listener.dropped >= 2 * len(ids) + 3, "all")
            assert listener.dropped == 3
        finally:
            await bridge.stop()

    asyncio.run(main())
    said = to_builtins(plane.snapshots.reported([*ids, "ghost"]))
    plane.close()
    assert set(said) == set(ids)
    assert {s["agent"]["agentVersion"] for s in said.values()} == {"9.9.9"}
    assert all(s["components"] for s in said.values())


def test_an_agent_not_yet_upgraded_is_kept_without_a_floor_and_a_loosened_one_shows(
    plane: ControlPlane,
) -> None:
    """Rule 5: a consumer accepts the versions it knows. A v1 agent (before the safety
    floor was said) is kept, its floor unknown (null); a v2 test rig shows its loosening."""
    old = AgentMetadataV1(
        schema="muto.agent-metadata.v1", vehicle_id="v1", agent_version="0.9", runtime="process"
    )
    rig = SafetyFloor(require_vehicle_stationary=False, require_battery_pct_min=30)

    async def main() -> None:
        listener = Bridge(plane).listener
        await listener.handle(topic("v1", Leaf.AGENT_METADATA), payload(old))
        await listener.handle(topic("v2", Leaf.AGENT_METADATA), payload(metadata("v2", floor=rig)))
        # a v2 without its floor, a v3 nobody knows: dropped
        v2 = to_builtins(metadata("v2", "6.6.6"))
        del v2["safetyFloor"]
        await listener.handle(topic("v2", Leaf.AGENT_METADATA), msgspec.json.encode(v2))
        v3 = to_builtins(metadata("v2", "7.7.7")) | {"schema": "muto.agent-metadata.v3"}
        await listener.handle(topic("v2", Leaf.AGENT_METADATA), msgspec.json.encode(v3))
        assert listener.dropped == 2

    asyncio.run(main())
    said = to_builtins(plane.snapshots.reported(["v1", "v2"]))
    assert said["v1"]["agent"]["agentVersion"] == "0.9"
    assert said["v1"]["agent"]["safetyFloor"] is None
    assert said["v2"]["agent"]["agentVersion"] == "1.2.3"
    assert said["v2"]["agent"]["safetyFloor"] == {
        "requireVehicleStationary": False,
        "denyIfAutonomousMode": True,
        "requireBatteryPctMin": 30,
    }
    assert SafetyFloor(**{"require_vehicle_stationary": False}).loosened == ["applies while moving"]
