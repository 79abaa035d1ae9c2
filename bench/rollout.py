"""Rollouts at fleet scale: time from `POST /rollouts` to 95 % converged, with instant
apply (the control plane's own overhead), for 1,000 and 10,000 simulated vehicles."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import Result
from bench.fleet_rig import FleetRig

TITLE = "Rollouts"
# 10,000 on request (MUTO_BENCH_FLEETS=1000,10000): at that size, on 2 cores shared with
# the cloud and the broker, the simulated agents are starved by their per-phase MQTT
# snapshot publishing and the run does not finish in reasonable time (see NOTES).
SIZES = [int(n) for n in os.environ.get("MUTO_BENCH_FLEETS", "1000").split(",")]
NOTES = """\
Real agents (`muto sim fleet`, two processes, MQTT notify plus a 30 s poll, simulated
runtime with instant apply), the cloud (`muto cloud serve`, SQLite) and Mosquitto share the
machine's 2 cores. Each run starts from a settled fleet (every agent up and the event log
quiet for 3 s). The baseline is the same fleet given the same release by one direct
desired-state assignment (no canary, no gates): the ratio is what the two-phase rollout
costs on top. *Where the time goes* splits the rollout at its stored events: canary phase
(assignment to the gate decision), wave assignment (decision to the wave committed), wave
convergence (to 95 %).

**10,000 vehicles: not measured yet.** 10,000 agents provision, connect (10,001 MQTT
clients) and fetch their first assignment, but on this 2-core machine the four simulator
processes, the cloud and Mosquitto starve each other: each agent publishes its retained
`agent/state` snapshots on every phase change. Coalescing those publishes is the next step
(`MUTO_BENCH_FLEETS=1000,10000 python -m bench rollout` runs it)."""


async def time_to_converge(
    rig: FleetRig,
    start: Callable[[], Awaitable[None]],
    revisions: Callable[[], Awaitable[set[str]]],
    target: float = 0.95,
) -> float:
    """Seconds from `start()` until `target` of the fleet reports converged on one of
    `revisions()` (re-read as they appear: a rollout assigns its wave later)."""
    t0 = time.monotonic()
    await start()
    while True:
        wanted = await revisions()
        vehicles = await rig.operator.vehicles("fleet=demo")
        done = sum(
            1 for v in vehicles if v["lastStatus"] == "converged" and v["desiredRevision"] in wanted
        )
        if done >= target * len(vehicles):
            return time.monotonic() - t0
        if time.monotonic() - t0 > 900:
            raise TimeoutError(f"{done}/{len(vehicles)} converged after 900 s")
        await asyncio.sleep(0.5)


async def assign_all(rig: FleetRig, version: str) -> float:
    """One direct desired-state assignment to the whole fleet, to 95 % converged."""
    revisions: set[str] = set()

    async def assign() -> None:
        body = await rig.operator.assign(
            {
                "target": {"selector": "fleet=demo"},
                "stack": {"name": "autonomy-core", "version": version},
            }
        )
        revisions.add(body["desiredStateRevision"])

    async def assigned() -> set[str]:
        return revisions

    took = await time_to_converge(rig, assign, assigned)
    await rig.settle()
    return took


async def one_size(n: int) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="muto-bench-rollout-") as tmp:
        async with FleetRig(Path(tmp), n, processes=2 if n <= 2000 else 4) as rig:
            first = await assign_all(rig, "1.0.0")  # every vehicle's first release

            async def start_rollout() -> None:
                await rig.operator.start_rollout(
                    {
                        "selector": "fleet=demo",
                        "stack": "autonomy-core",
                        "version": "1.1.0",
                        "rolloutId": "bench",
                    }
                )

            async def rollout_revisions() -> set[str]:
                r = await rig.operator.rollout("bench")
                return {v["revision"] for v in r["vehicles"] if v["revision"]}

            took = await time_to_converge(rig, start_rollout, rollout_revisions)
            canary = canary_phase(await rig.operator.rollout("bench"))
            await rig.settle()
            direct = await assign_all(rig, "1.2.0")
    workload = (
        f"{n:,} simulated vehicles, 6 canaries (3 regions x 2 models); fleet "
        f"start-up {rig.startup_s:.0f} s and settling not counted"
    )
    return [
        Result(
            f"POST /rollouts to 95 % converged, {n:,} vehicles",
            took,
            "s",
            workload,
            "one direct assignment of the next release to the fleet, to 95 %",
            direct,
        ),
        Result(
            f"canary phase (assignment to gate decision), {n:,} vehicles",
            canary,
            "s",
            "part of the rollout above",
            "whole rollout",
            took,
        ),
        Result(
            f"wave (gate decision to 95 %), {n:,} vehicles",
            took - canary,
            "s",
            "part of the rollout above",
            "whole rollout",
            took,
        ),
        Result(
            f"first release to a fresh fleet, {n:,} vehicles",
            first,
            "s",
            "direct assignment to vehicles running nothing yet (first apply, first "
            "health transition)",
            "the later direct assignment",
            direct,
        ),
    ]


def canary_phase(rollout: dict[str, Any]) -> float:
    if not rollout["decisions"]:
        return 0.0
    started = datetime.fromisoformat(rollout["startedAt"])
    return (datetime.fromisoformat(rollout["decisions"][0]["at"]) - started).total_seconds()


def run() -> list[Result]:
    results: list[Result] = []
    for n in SIZES:
        results.extend(asyncio.run(one_size(n)))
    return results
