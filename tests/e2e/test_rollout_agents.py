"""Rollouts with real agents (simulated runtime) against the real cloud process and a
real Mosquitto: pause/resume, fleet rollback, and a cloud restart mid-rollout (issue 6).
The good, crash-looping and deferred-vehicle stories run in tests/e2e/test_demo.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muto.sim.demo import release
from muto.sim.fleet import SimFleet, SimVehicle
from muto.sim.operator import OperatorClient
from muto.sim.profile import SimProfile, vehicle_ids
from muto.sim.services import CloudProcess, prepare_cloud
from muto.trust import sign_release
from tests.conftest import Mosquitto

FLEET = 12  # 6 canaries (3 regions x 2 models) and a wave of 6


@dataclass
class Rig:
    cloud: CloudProcess
    operator: OperatorClient
    fleet: SimFleet


@asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    broker = Mosquitto(tmp_path)
    broker.start()
    token, trust, signer, pub = prepare_cloud(tmp_path)
    cloud = CloudProcess(tmp_path / "cloud", broker.url, pub)
    await cloud.start()
    operator = OperatorClient(cloud.url, token)
    for version in ("1.0.0", "1.1.0"):
        await operator.register_release(sign_release(release(version), [signer]))
    fleet = SimFleet(
        cloud.url, trust, SimProfile(poll_s=1.0), mqtt_url=broker.url, operator_token=token
    )
    await fleet.provision(SimVehicle(v, r, m) for v, r, m in vehicle_ids(SimProfile(), FLEET))
    await fleet.start()
    try:
        yield Rig(cloud, operator, fleet)
    finally:
        await fleet.stop()
        await operator.aclose()
        await cloud.stop()
        broker.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.3)


async def state(r: Rig, rollout_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await r.operator.rollout(rollout_id)
    return found


async def roll_out(r: Rig, version: str, rollout_id: str) -> None:
    await r.operator.start_rollout(
        {
            "selector": "fleet=demo",
            "stack": "autonomy-core",
            "version": version,
            "rolloutId": rollout_id,
            "thresholds": {"bakeSec": 1},  # completed a second after the wave gate passes
        }
    )


async def until_state(r: Rig, rollout_id: str, wanted: str) -> None:
    async def reached() -> bool:
        return (await state(r, rollout_id))["state"] == wanted

    await eventually(reached)


async def running(r: Rig) -> dict[str, str | None]:
    return {v["vehicleId"]: v["runningRelease"] for v in await r.operator.vehicles("fleet=demo")}


async def converge_on_100(r: Rig) -> None:
    await roll_out(r, "1.0.0", "base")

    await until_state(r, "base", "completed")


def test_pause_holds_the_wave_and_resume_releases_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await converge_on_100(r)
            await roll_out(r, "1.1.0", "next")
            await r.operator.http.post("/rollouts/next/pause")

            async def canaries_converged() -> bool:
                s = await state(r, "next")
                return s["phases"]["canary"]["converged"] == s["phases"]["canary"]["targeted"]

            await eventually(canaries_converged)
            await asyncio.sleep(2.0)  # several controller ticks: paused means no wave
            paused = await state(r, "next")
            assert paused["state"] == "canary" and paused["paused"]
            assert paused["phases"]["wave"]["assigned"] == 0
            await r.operator.http.post("/rollouts/next/resume")

            await until_state(r, "next", "completed")
            assert set((await running(r)).values()) == {"autonomy-core@1.1.0"}

    asyncio.run(scenario())


def test_fleet_rollback_returns_every_vehicle_to_its_previous_release(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await converge_on_100(r)
            await roll_out(r, "1.1.0", "next")

            await until_state(r, "next", "completed")
            await r.operator.http.post("/rollouts/next/rollback")

            async def all_back() -> bool:
                return set((await running(r)).values()) == {"autonomy-core@1.0.0"}

            await eventually(all_back)
            s = await state(r, "next")
            assert s["state"] == "rolled_back"
            assert sum(p["rolledBack"] for p in s["phases"].values()) == FLEET
            vehicles = await r.operator.vehicles("fleet=demo")
            # A rollback is a new, higher revision, not a replay of an old document.
            assert all(v["sequence"] == 3 for v in vehicles)

    asyncio.run(scenario())


def test_a_cloud_restart_mid_rollout_resumes_where_it_stopped(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await converge_on_100(r)
            r.fleet.cut(list(r.fleet.vehicles))  # hold reports back while the cloud restarts
            await roll_out(r, "1.1.0", "next")
            await r.cloud.stop()
            await r.cloud.start()  # same data dir, same port
            r.fleet.restore(list(r.fleet.vehicles))

            await until_state(r, "next", "completed")
            s = await state(r, "next")
            assert [d["event"] for d in s["decisions"]] == [
                "CanaryGatePassed",
                "WaveGatePassed",
                "BakeCompleted",
            ]
            assert set((await running(r)).values()) == {"autonomy-core@1.1.0"}

    asyncio.run(scenario())
