"""Scenario 4: Mosquitto killed -9 and restarted, again and again, under the real cloud
process, three in-process agents and one agent process.

Each cycle: kill -9 the broker; while it is down, assign a new release to the in-process
agents: the notify cannot reach them, they converge by polling; restart the broker (same
port, no persistence: retained messages gone); the cloud's bridge and every agent
reconnect; the agent process is killed -9 (its Last Will makes the cloud record it
offline) and restarted (online again). Task and file-descriptor counts, taken at the same
quiet point of each cycle, stay flat.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest

from muto.agent.agent import Agent
from muto.trust import Signer
from tests.conftest import Mosquitto
from tests.faults.runs import runs
from tests.faults.sim import (
    open_fds,
    open_fds_but_databases,
    retained_presence,
    sim_agents,
    threads,
    vehicle_token,
)
from tests.support.processes import AgentProcess, CloudProcess
from tests.support.releases import stack_release
from tests.support.waits import until

pytestmark = pytest.mark.mqtt
SIM_AGENTS = 3
SLACK = 3  # transient HTTP connections; a leak per restart would show as dozens


def presence(cloud: CloudProcess, vehicle_id: str) -> str:
    found: str = cloud.vehicle(vehicle_id)["presence"]
    return found


def converged_on(agents: list[Agent], key: str) -> bool:
    return all(a.journal.state.running_key == key and not a.journal.state.outbox for a in agents)


async def lwt_connected(broker: Mosquitto) -> None:
    """The agent process holds a session with the broker as it is now (its Last Will set)."""
    for _ in range(600):
        if await retained_presence(broker.url, "car-lwt") == "online":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("car-lwt did not connect to the restarted broker")


def reconnected(agents: list[Agent], restarts: int) -> bool:
    return all(
        a.mqtt is not None and a.mqtt.connected and a.mqtt.connections > restarts for a in agents
    )


class Census:
    """Counts taken at one quiet point per cycle: our tasks and fds, the cloud's fds (its
    database files aside) and threads."""

    def __init__(self, cloud: CloudProcess) -> None:
        assert cloud.proc is not None
        self.cloud_pid = cloud.proc.pid
        self.rows: list[tuple[int, int, int, int]] = []

    async def take(self) -> None:
        """The task count seen most often over a second: a leaked task is in every
        sample; a publish in flight, or a wait being re-armed, only in some."""
        tasks = []
        for _ in range(20):
            tasks.append(len(asyncio.all_tasks()))
            await asyncio.sleep(0.05)
        cloud = self.cloud_pid
        row = (statistics.mode(tasks), open_fds(), open_fds_but_databases(cloud), threads(cloud))
        self.rows.append(row)

    def flat(self) -> None:
        first, last = self.rows[0], self.rows[-1]
        assert last[0] == first[0], self.rows  # asyncio tasks: exactly as many
        assert all(b <= a + SLACK for a, b in zip(first[1:], last[1:], strict=True)), self.rows


@pytest.mark.parametrize("count", runs(3, 100, full_timeout_s=3600))
def test_broker_killed_and_restarted(count: int, tmp_path: Path, mosquitto: Mosquitto) -> None:
    cloud = CloudProcess(tmp_path, mosquitto.url)
    cloud.start()
    signer = Signer.generate()
    ids = [f"sim-{n}" for n in range(SIM_AGENTS)]
    agents = sim_agents(cloud, signer, ids, "sim", mqtt_url=mosquitto.url, poll_s=1.0)
    lwt = AgentProcess(tmp_path, "car-lwt", cloud, vehicle_token(cloud, "car-lwt"), "simulated")
    lwt.start(trust=lwt.provision(signer))

    async def cycles() -> Census:
        for agent in agents:
            await agent.start()
        census = Census(cloud)
        try:
            for n in range(count + 1):
                release = stack_release("sim", f"1.0.{n}")
                await asyncio.to_thread(cloud.publish, release, signer)
                if n > 0:  # cycle 0 only sets up the baseline
                    await asyncio.to_thread(mosquitto.stop, True)
                await asyncio.to_thread(cloud.desire, "group=sim", release)
                await until(lambda r=release: converged_on(agents, r.key), "convergence")
                if n > 0:
                    await asyncio.to_thread(mosquitto.start)
                await until(lambda n=n: reconnected(agents, n), "every agent reconnected")
                await until(lambda: cloud.call("GET", "/healthz")["mqttConnected"], "the cloud")
                await until(lambda: all(presence(cloud, v) == "online" for v in ids), "online")
                await lwt_connected(mosquitto)
                assert lwt.proc is not None
                lwt.proc.kill()
                assert await asyncio.to_thread(lwt.wait_exit) == -9
                await until(lambda: presence(cloud, "car-lwt") == "offline", "the Last Will")
                lwt.start()
                await until(lambda: presence(cloud, "car-lwt") == "online", "online again")
                await census.take()
        finally:
            for agent in agents:
                await agent.stop()
        return census

    try:
        census = asyncio.run(cycles())
    finally:
        lwt.stop()
        cloud.stop()
    census.flat()
    print(f"\nscenario 4: {count} broker kills -9 and restarts; census (tasks, fds, cloud fds, "
          f"cloud threads) first {census.rows[0]} last {census.rows[-1]}")  # fmt: skip
