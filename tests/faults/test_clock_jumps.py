"""Scenario 10: the vehicle's wall clock jumps, forward and backward, by up to 40 days,
under an in-process agent (real journal, trust and HTTP logic; simulated runtime)
against the real cloud. Its monotonic clock runs on.

Each round the cloud assigns a new release under an apply window (02:00-05:00, vehicle
local time, UTC) and a document that expires 30 days after it was signed; the wall
clock jumps to a random time; a pass must do what docs/agent.md and docs/trust.md say:
- expired at intake: `rejected` DESIRED_STATE_EXPIRED, the running release kept; with
  the clock right again the same document is fetched again and applied;
- outside the window: `blocked` DENY_OUTSIDE_WINDOW; then inside it: applied;
- inside the window: applied, while the wall clock jumps again (days, either way) during
  the readiness wait: readiness still passes, and the apply and readiness durations
  (monotonic) are what the simulated runtime took, not the jump.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from muto.agent.journal.events import ReadinessPassed, ReportQueued
from muto.agent.runtime.simulated import SimulatedBehaviour
from muto.domain.desired import ApplyWindow
from muto.domain.vehicle_state import VehicleState
from muto.domain.window import in_apply_window
from muto.trust import Signer
from tests.conftest import Mosquitto
from tests.faults.runs import runs
from tests.faults.sim import sim_agents
from tests.support.processes import CloudProcess
from tests.support.releases import stack_release

READY_AFTER_S = 0.5
WINDOW = ApplyWindow(start_local="02:00", end_local="05:00")
POLICY = {"applyWindow": {"startLocal": "02:00", "endLocal": "05:00"}}
TTL = timedelta(days=30)  # the cloud's default desired-state lifetime
FIRST_JUMPS = [(0, 3), (31, 3), (-3, 10)]  # (days, hour): inside, expired, outside


class JumpingClock:
    """Wall time that jumps when told; monotonic time that does not."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def jump_to(self, wall: datetime) -> None:
        self.offset = wall - datetime.now(UTC)


def at_hour(day: datetime, hour: float) -> datetime:
    return day.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=hour)


@pytest.mark.parametrize("count", runs(4, 120))
def test_wall_clock_jumps(count: int, tmp_path: Path, mosquitto: Mosquitto) -> None:
    cloud = CloudProcess(tmp_path, mosquitto.url)
    cloud.start()
    signer = Signer.generate()
    clock = JumpingClock()
    releases = [stack_release("sim", f"1.0.{n}") for n in range(count)]
    behaviours = {r.key: SimulatedBehaviour(ready_after_sec=READY_AFTER_S) for r in releases}
    (agent,) = sim_agents(cloud, signer, ["car-clk"], "clk", clock=clock, behaviours=behaviours,
                          vehicle=VehicleState(timezone="UTC", free_disk_mb=1e6))  # fmt: skip
    rng = random.Random(10)
    seen = {"expired": 0, "outside": 0, "inside": 0}

    async def jump_during_readiness(to: datetime) -> None:
        await asyncio.sleep(READY_AFTER_S / 2)
        clock.jump_to(to)

    async def scenario() -> None:
        await agent.start(loop=False)
        for n, release in enumerate(releases):
            await asyncio.to_thread(cloud.publish, release, signer)
            signed_at = datetime.now(UTC)
            await asyncio.to_thread(cloud.desire, "vehicle=car-clk", release, policy=POLICY)
            running = agent.journal.state.running_key
            wall = signed_at + timedelta(days=rng.uniform(-40, 40), hours=rng.uniform(0, 24))
            if n < len(FIRST_JUMPS):  # each case at least once, whatever the count
                days, hour = FIRST_JUMPS[n]
                wall = at_hour(signed_at + timedelta(days=days), hour)
            clock.jump_to(wall)
            if wall >= signed_at + TTL:
                verdict = await agent.reconcile()
                assert verdict.kind == "converged" and agent.journal.state.running_key == running
                last = [r.event for r in agent.journal.records()
                        if isinstance(r.event, ReportQueued)][-1]  # fmt: skip
                assert (last.status, [str(c) for c in last.codes]) == (
                    "rejected", ["DESIRED_STATE_EXPIRED"])  # fmt: skip
                clock.jump_to(at_hour(signed_at, 3))
                # The clock right again, the same document is fetched again (a rejected
                # document's ETag is not kept) and accepted: applied inside the window.
                assert (await agent.reconcile()).kind == "converged"
                assert agent.journal.state.running_key == release.key
                seen["expired"] += 1
                continue
            if not in_apply_window(WINDOW, wall, "UTC"):
                verdict = await agent.reconcile()
                assert (verdict.kind, [str(c) for c in verdict.codes]) == (
                    "blocked", ["DENY_OUTSIDE_WINDOW"])  # fmt: skip
                seen["outside"] += 1
                inside = at_hour(wall, rng.uniform(2, 4.9))
                if inside >= signed_at + TTL:  # that day's window opens after it expired
                    inside -= timedelta(days=1)  # (run near 02:00 UTC): the day before's
                clock.jump_to(inside)
            else:
                seen["inside"] += 1
            jump = clock.now() + timedelta(days=rng.choice([-1, 1]) * rng.uniform(1, 40))
            jumper = asyncio.create_task(jump_during_readiness(jump))
            verdict = await agent.reconcile()
            await jumper
            assert verdict.kind == "converged" and agent.journal.state.running_key == release.key
            passed = [r.event for r in agent.journal.records()
                      if isinstance(r.event, ReadinessPassed)][-1]  # fmt: skip
            # Measured on the monotonic clock from just after the apply returned, while
            # the runtime counts from its start: a few ms short of READY_AFTER_S is
            # right; a day's jump (what this checks) would be off by 86,400 s.
            assert READY_AFTER_S - 0.1 <= passed.readiness_sec < READY_AFTER_S + 30
            last_apply = agent.journal.state.last_apply
            assert last_apply is not None and 0 <= (last_apply.apply_sec or 0) < 30
        await agent.stop()

    try:
        asyncio.run(scenario())
    finally:
        cloud.stop()
    print(f"\nscenario 10: {count} wall-clock jumps of up to 40 days, {seen}; every readiness "
          f"passed on the monotonic clock during a second jump")  # fmt: skip
