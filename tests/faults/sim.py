"""In-process agents (simulated runtime, vehicle and artifacts; real journal logic, real
HTTP and MQTT) against the real cloud process, for scenarios that count tasks, cut
links or move clocks. The test's event loop runs them; blocking calls go to threads."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from muto.agent.agent import Agent
from muto.agent.compose import simulated_agent
from muto.trust import KeySet, Signer, TrustConfig
from tests.support.processes import CloudProcess


def trust_of(cloud: CloudProcess, signer: Signer) -> TrustConfig:
    return TrustConfig(
        release_keys=KeySet(keys=[signer.public_pem]),
        control_plane_keys=KeySet(keys=[cloud.control_plane_pem]),
    )


def vehicle_token(cloud: CloudProcess, vehicle_id: str, **labels: str) -> str:
    """Register a vehicle and issue its token over the API."""
    cloud.register(vehicle_id, model="m3", vehicle=vehicle_id, **labels)
    issued = cloud.call("POST", "/tokens", {"role": "vehicle", "vehicleId": vehicle_id})
    token: str = issued["token"]
    return token


def sim_agents(
    cloud: CloudProcess, signer: Signer, ids: list[str], group: str, **settings: Any
) -> list[Agent]:
    trust = trust_of(cloud, signer)
    return [
        simulated_agent(
            vehicle_id,
            trust,
            cloud_url=cloud.url,
            token=vehicle_token(cloud, vehicle_id, group=group),
            **settings,
        )
        for vehicle_id in ids
    ]


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


DATABASE_FILES = (".db", ".db-wal", ".db-shm")


def open_fds_but_databases(pid: int | str = "self") -> int:
    """Open fds other than SQLite files: the cloud's connection pools open those lazily,
    up to the pool's size, so their count climbs over the first cycles without leaking."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed while listing
            count += not os.readlink(fd).endswith(DATABASE_FILES)
    return count


def threads(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


async def retained_presence(broker_url: str, vehicle_id: str, tenant: str = "default") -> str:
    """The presence the broker holds for a vehicle now (retained), or "" for none: a
    vehicle's agent has connected to this broker once it holds `online`."""
    import aiomqtt

    from muto.domain.messages import Leaf, Presence, vehicle_topic
    from muto.domain.wire import decode

    host, port = broker_url.removeprefix("mqtt://").split(":")
    topic = vehicle_topic(tenant, vehicle_id, Leaf.PRESENCE)
    async with aiomqtt.Client(host, int(port)) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(0.5):  # a retained message comes at once, or never
                async for message in client.messages:
                    return str(decode(bytes(message.payload), Presence).state)  # type: ignore[arg-type]
        except TimeoutError:
            return ""
    return ""
