"""Real rollouts end to end: `muto cloud serve` in its own process (on SQLite or
PostgreSQL), a private Mosquitto, and a fleet of real agents with the simulated runtime
(muto.sim), whose releases can misbehave per vehicle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muto.agent.runtime.simulated import SimulatedRuntime
from muto.sim.demo import STACK, release
from muto.sim.fleet import SimFleet, SimVehicle
from muto.sim.operator import OperatorClient
from muto.sim.profile import Behaviour, SimProfile, vehicle_ids
from muto.sim.services import CloudProcess, prepare_cloud
from muto.trust import sign_release
from tests.conftest import Mosquitto
from tests.support.api_server import database

# Two region-model groups: two canaries, the rest is the wave.
PROFILE = SimProfile(regions=["eu-west"], models=["vehicle-v3", "vehicle-v4"], poll_s=1.0)
GOOD, NEXT = f"{STACK}@1.0.0", f"{STACK}@1.1.0"
WAIT_S = 90.0  # a cap on a loaded machine, never a pace


@dataclass
class Rig:
    cloud: CloudProcess
    operator: OperatorClient
    fleet: SimFleet
    database_url: str | None

    @property
    def ids(self) -> list[str]:
        return sorted(self.fleet.vehicles)

    def misbehave(self, vehicle_id: str, key: str, behaviour: Behaviour) -> None:
        """`key` (stack@version) behaves so on this one vehicle."""
        agent = self.fleet.vehicles[vehicle_id].agent
        assert agent is not None and isinstance(agent.parts.runtime, SimulatedRuntime)
        table = agent.parts.runtime.behaviours
        assert isinstance(table, dict)
        agent.parts.runtime.behaviours = {**table, key: behaviour.simulated()}

    async def rollout(self, rollout_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.operator.rollout(rollout_id)
        return found

    async def start(self, rollout_id: str, version: str, **thresholds: float) -> None:
        await self.operator.start_rollout(
            {
                "selector": "fleet=demo",
                "stack": STACK,
                "version": version,
                "rolloutId": rollout_id,
                "thresholds": thresholds,
            }
        )

    async def until(
        self, rollout_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = WAIT_S
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def check() -> bool:
            nonlocal found
            found = await self.rollout(rollout_id)
            return done(found)

        await eventually(check, timeout_s, lambda: f"rollout {rollout_id}: {found}")
        return found

    async def vehicles(self) -> dict[str, dict[str, Any]]:
        return {v["vehicleId"]: v for v in await self.operator.vehicles("fleet=demo")}

    async def vehicle(self, vehicle_id: str) -> dict[str, Any]:
        found = await self.operator.http.get(f"/vehicles/{vehicle_id}")
        assert found.status_code == 200, found.text
        data: dict[str, Any] = found.json()["data"]
        return data

    async def running(self) -> dict[str, str | None]:
        return {k: v["runningRelease"] for k, v in (await self.vehicles()).items()}

    async def desired(self) -> dict[str, str | None]:
        return {k: v["desiredRelease"] for k, v in (await self.vehicles()).items()}


async def eventually(
    check: Callable[[], Awaitable[bool]],
    timeout_s: float = WAIT_S,
    say: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"condition not reached in time {say()}"
        await asyncio.sleep(0.3)


@asynccontextmanager
async def rig(
    tmp_path: Path, backend: str, count: int = 6, running: str | None = GOOD
) -> AsyncIterator[Rig]:
    """`count` vehicles running GOOD (assigned directly, not by a rollout; `running`
    None: a fresh fleet, running nothing), releases GOOD and NEXT registered."""
    with database(backend) as url:
        broker = Mosquitto(tmp_path)
        broker.start()
        try:
            token, trust, signer, pub = prepare_cloud(tmp_path, url)
            cloud = CloudProcess(tmp_path / "cloud", broker.url, pub, database_url=url)
            await cloud.start()
            operator = OperatorClient(cloud.url, token)
            fleet = SimFleet(cloud.url, trust, PROFILE, mqtt_url=broker.url, operator_token=token)
            try:
                for version in ("1.0.0", "1.1.0"):
                    await operator.register_release(sign_release(release(version), [signer]))
                await fleet.provision(
                    SimVehicle(v, r, m) for v, r, m in vehicle_ids(PROFILE, count)
                )
                await fleet.start()
                r = Rig(cloud, operator, fleet, url)
                if running is not None:
                    stack, _, version = running.partition("@")
                    await operator.assign(
                        {
                            "target": {"selector": "fleet=demo"},
                            "stack": {"name": stack, "version": version},
                        }
                    )

                async def all_good() -> bool:
                    return set((await r.running()).values()) == {running}

                await eventually(all_good)
                yield r
            finally:
                try:  # a hang here must fail the test, not the suite
                    await asyncio.wait_for(fleet.stop(), WAIT_S)
                finally:
                    await operator.aclose()
                    await cloud.stop()
        finally:
            broker.stop()
