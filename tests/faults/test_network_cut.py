"""Scenario 5: the link between a vehicle and the cloud is cut for a long stretch of
simulated time, then restored. An in-process agent (real journal logic, real HTTP to
the real cloud process, through a switchable link: muto/sim/link.py) on a clock that
moves only when told; its loop runs for real, woken every simulated 10 minutes.

While cut: the vehicle keeps its last committed state (it applies the release it had
accepted once it parks, never one assigned in the cloud meanwhile), the outbox grows
with changes, not with time. Restored: every queued report arrives once, in the order
it was queued, and the agent takes in what was assigned meanwhile.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from muto.agent.agent import Agent
from muto.agent.compose import simulated_agent
from muto.agent.journal.events import ReportQueued
from muto.agent.safety import SimulatedStateProvider
from muto.domain.vehicle_state import VehicleState
from muto.sim.link import FleetLink
from muto.trust import Signer
from tests.conftest import Mosquitto
from tests.faults.fleet import reconcile_reports
from tests.faults.runs import runs
from tests.faults.sim import trust_of, vehicle_token
from tests.support.agent_rig import ManualClock
from tests.support.processes import CloudProcess
from tests.support.releases import stack_release
from tests.support.waits import until

STEP_S = 600.0  # the loop is woken every 10 simulated minutes
MOVING = VehicleState(speed_mps=5.0, free_disk_mb=1e6)
PARKED = VehicleState(free_disk_mb=1e6)


async def pass_done(agent: Agent) -> None:
    """The pass the last trigger asked for has run (the loop takes the triggers and
    locks the reconciler without yielding in between)."""
    reconciler = agent._wired.reconciler  # the loop's own lock: nothing public says so
    async with asyncio.timeout(60):
        while agent.triggers or reconciler.lock.locked():
            await asyncio.sleep(0.001)


@pytest.mark.parametrize("count", runs(24, 20 * 24))  # hours cut off (a document lives 30 days)
def test_a_long_network_cut(count: int, tmp_path: Path, mosquitto: Mosquitto) -> None:
    cloud = CloudProcess(tmp_path, mosquitto.url)
    cloud.start()
    signer = Signer.generate()
    a, b, c = (stack_release("sim", v) for v in ("1.0.0", "2.0.0", "3.0.0"))
    for release in (a, b, c):
        cloud.publish(release, signer)
    token = vehicle_token(cloud, "car-cut")
    clock = ManualClock(datetime.now(UTC))

    async def scenario() -> dict[str, int]:
        link = FleetLink()
        link.register("car-cut", token)
        try:
            agent = simulated_agent("car-cut", trust_of(cloud, signer), cloud_url=cloud.url,
                                    http=link, token=token, clock=clock)  # fmt: skip
            vehicle = agent.parts.vehicle
            assert isinstance(vehicle, SimulatedStateProvider)
            await agent.start()

            async def settle(key: str, status: str) -> None:
                def done() -> bool:
                    s = agent.journal.state
                    last = [str(o.status) for o in s.reported.values()][-1:]
                    return s.running_key == key and not s.outbox and last == [status]

                await until(done, f"{key} {status}")

            await asyncio.to_thread(cloud.desire, "vehicle=car-cut", a)
            agent.trigger("test")
            await settle(a.key, "converged")
            vehicle.state = MOVING
            await asyncio.to_thread(cloud.desire, "vehicle=car-cut", b)
            agent.trigger("test")
            await settle(a.key, "blocked")
            link.cut.add("car-cut")
            await asyncio.to_thread(cloud.desire, "vehicle=car-cut", c)  # unseen until restored
            most_queued = 0
            for step in range(int(count * 3600 / STEP_S)):
                hour = step * STEP_S / 3600
                vehicle.state = PARKED if hour >= 2 and int(hour) % 12 < 8 else MOVING
                clock.advance(STEP_S)
                agent.trigger("tick")
                await pass_done(agent)
                assert agent.journal.state.running_key in (a.key, b.key)  # never c
                most_queued = max(most_queued, len(agent.journal.state.outbox))
            assert agent.journal.state.running_key == b.key  # applied offline, parked
            cut_off = link.refused
            link.cut.clear()
            vehicle.state = PARKED
            agent.trigger("restored")
            await settle(c.key, "converged")
            await agent.stop()
        finally:
            await link.aclose()
        queued = [
            r.event.report_id
            for r in agent.journal.records()
            if isinstance(r.event, ReportQueued) and r.event.kind == "reconcile"
        ]
        stored = [r["reportId"] for r in reconcile_reports(cloud, "car-cut")]
        assert stored == queued  # each once, in the order queued
        return {"refused": cut_off, "most_queued": most_queued, "reports": len(queued)}

    try:
        figures = asyncio.run(scenario())
    finally:
        cloud.stop()
    assert figures["most_queued"] <= 4  # changes, not time: blocked, converged, health
    print(f"\nscenario 5: cut {count} simulated hours; {figures}")
