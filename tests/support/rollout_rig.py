"""Real rollouts end to end: `muto cloud serve` in its own process (on SQLite or
PostgreSQL), a private Mosquitto, and a fleet of real agents with the simulated runtime
(muto.sim), whose releases can misbehave per vehicle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from muto.agent.runtime.simulated import SimulatedRuntime
from muto.sim.demo import STACK, release
from muto.sim.fleet import SimFleet, SimVehicle
from muto.sim.operator import OperatorClient
from muto.sim.profile import Behaviour, SimProfile, vehicle_ids
from muto.sim.services import CloudProcess, prepare_cloud
from tests.conftest import Mosquitto
from tests.support.api_server import database
from tests.support.releases import signed
from tests.support.waits import until

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

        await until(check, lambda: f"rollout {rollout_id}: {found}", timeout_s, interval=0.3)
        return found

    async def controller_ticks(self) -> int:
        """Passes the cloud's rollout controller has made (its /metrics counter)."""
        scraped = await self.operator.http.get("/metrics")
        assert scraped.status_code == 200, scraped.text
        for family in text_string_to_metric_families(scraped.text):
            if family.name == "muto_rollout_controller_ticks":
                return int(family.samples[0].value)
        raise AssertionError("the cloud exposes no muto_rollout_controller_ticks")

    async def ticks_pass(self, count: int) -> None:
        """Return once the controller has started and finished `count` whole passes
        after this call: whatever they would decide is decided."""
        start = await self.controller_ticks()

        async def done() -> bool:
            return await self.controller_ticks() >= start + count + 1

        await until(done, f"{count} controller passes", WAIT_S, interval=0.3)

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

    async def running_everywhere(self, release: str) -> None:
        """Return once every vehicle reports running `release` (stack@version)."""

        async def everywhere() -> bool:
            return set((await self.running()).values()) == {release}

        await until(everywhere, f"{release} running on every vehicle", WAIT_S, interval=0.3)


@asynccontextmanager
async def rig(
    tmp_path: Path,
    backend: str = "sqlite",
    count: int = 6,
    profile: SimProfile = PROFILE,
    running: str | None = GOOD,
) -> AsyncIterator[Rig]:
    """`count` vehicles of `profile`, releases GOOD and NEXT registered; every vehicle
    runs `running` first (assigned directly, not by a rollout), or nothing when None."""
    with database(backend) as url:
        broker = Mosquitto(tmp_path)
        broker.start()
        try:
            token, trust, signer, pub = prepare_cloud(tmp_path, url)
            cloud = CloudProcess(tmp_path / "cloud", broker.url, pub, database_url=url)
            await cloud.start()
            operator = OperatorClient(cloud.url, token)
            fleet = SimFleet(cloud.url, trust, profile, mqtt_url=broker.url, operator_token=token)
            try:
                for version in ("1.0.0", "1.1.0"):
                    await operator.register_release(signed(release(version), signer).envelope)
                await fleet.provision(
                    SimVehicle(v, r, m) for v, r, m in vehicle_ids(profile, count)
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
                    await r.running_everywhere(running)
                yield r
            finally:
                try:  # a hang here must fail the test, not the suite
                    await asyncio.wait_for(fleet.stop(), WAIT_S)
                finally:
                    await operator.aclose()
                    await cloud.stop()
        finally:
            broker.stop()
