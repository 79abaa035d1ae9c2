"""Rollouts with real agents (simulated runtime) against the real cloud process and a
real Mosquitto: pause/resume, fleet rollback, and a cloud restart mid-rollout (issue 6).
The good, crash-looping and deferred-vehicle stories run in tests/e2e/test_demo.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support.rollout_rig import GOOD, NEXT, rig

PASSES = 3  # controller passes a paused rollout must sit through without moving


def completed(s: dict[str, Any]) -> bool:
    return bool(s["state"] == "completed")


def test_pause_holds_the_wave_and_resume_releases_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.start("next", "1.1.0", bakeSec=1)  # completed a second after the wave gate
            await r.operator.http.post("/rollouts/next/pause")

            def canaries_converged(s: dict[str, Any]) -> bool:
                return bool(s["phases"]["canary"]["converged"] == s["phases"]["canary"]["targeted"])

            await r.until("next", canaries_converged)
            # Passes that would have opened the wave had the pause been ignored.
            await r.ticks_pass(PASSES)
            paused = await r.rollout("next")
            assert paused["state"] == "canary" and paused["paused"], paused
            assert paused["phases"]["wave"]["assigned"] == 0, paused
            await r.operator.http.post("/rollouts/next/resume")

            await r.until("next", completed)
            await r.running_everywhere(NEXT)

    asyncio.run(scenario())


def test_fleet_rollback_returns_every_vehicle_to_its_previous_release(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.start("next", "1.1.0", bakeSec=1)
            await r.until("next", completed)
            await r.operator.http.post("/rollouts/next/rollback")

            await r.running_everywhere(GOOD)
            s = await r.rollout("next")
            assert s["state"] == "rolled_back"
            assert sum(p["rolledBack"] + p["rollingBack"] for p in s["phases"].values()) == len(
                r.ids
            )
            # A rollback is a new, higher revision, not a replay of an old document.
            assert all(v["sequence"] == 3 for v in (await r.vehicles()).values())

    asyncio.run(scenario())


def test_a_cloud_restart_mid_rollout_resumes_where_it_stopped(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            r.fleet.cut(r.ids)  # hold reports back while the cloud restarts
            await r.start("next", "1.1.0", bakeSec=1)
            await r.cloud.stop()
            await r.cloud.start()  # same data dir, same port
            r.fleet.restore(r.ids)

            s = await r.until("next", completed)
            assert [d["event"] for d in s["decisions"]] == [
                "CanaryGatePassed",
                "WaveGatePassed",
                "BakeCompleted",
            ]
            await r.running_everywhere(NEXT)

    asyncio.run(scenario())
