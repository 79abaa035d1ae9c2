"""The vehicle's own safety floor: a desired state's policy may tighten the gates, never
loosen them (docs/agent.md "Safety gates"). Only the vehicle's provisioning may loosen its
floor (`muto agent run --allow-apply-while-moving ...`, a test rig).

Review defect 1: a vehicle at 25 m/s in autonomous mode with 3 % battery applied a new
release because the desired state said `requireVehicleStationary: false,
denyIfAutonomousMode: false, requireBatteryPctMin: 0`."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from muto.agent import cli as agent_cli
from muto.agent.compose import RunOptions
from muto.agent.safety import SimulatedStateProvider
from muto.domain.desired import Policy
from muto.domain.gates import SafetyFloor
from muto.domain.reasons import ReasonCode
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import Rig, make_rig, release

OLD, NEW = release("1.0.0"), release("2.0.0")
LENIENT = Policy(
    require_vehicle_stationary=False, deny_if_autonomous_mode=False, require_battery_pct_min=0
)
PARKED = VehicleState(speed_mps=0, autonomous_mode=False, battery_pct=90, free_disk_mb=100_000)


async def running_old(**settings: object) -> Rig:
    """An agent that converged on 1.0.0 while parked."""
    rig = make_rig(vehicle=SimulatedStateProvider(PARKED), **settings)
    await rig.agent.start(loop=False)
    rig.cloud.serve(rig.signers.bundle(OLD, 1))
    await rig.reconcile()
    assert rig.runtime.status().release == OLD.key
    return rig


def test_a_lenient_policy_does_not_let_a_moving_autonomous_vehicle_apply() -> None:
    async def scenario() -> None:
        rig = await running_old()
        rig.vehicle.set(speed_mps=25, autonomous_mode=True, battery_pct=3)
        rig.cloud.serve(rig.signers.bundle(NEW, 2, policy=LENIENT))
        verdict = await rig.reconcile()
        assert verdict.kind == "blocked"
        assert verdict.codes == (ReasonCode.DENY_MOVING, ReasonCode.DENY_AUTONOMOUS_MODE)
        assert rig.journal.state.gates == [
            ReasonCode.DENY_MOVING,
            ReasonCode.DENY_AUTONOMOUS_MODE,
        ]
        assert rig.runtime.status().release == OLD.key
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "blocked",
            ["DENY_MOVING", "DENY_AUTONOMOUS_MODE"],
        )
        # Parked and manual again: the same desired state applies.
        rig.vehicle.set(speed_mps=0, autonomous_mode=False)
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == NEW.key

    asyncio.run(scenario())


def test_the_vehicles_battery_minimum_holds_whatever_the_policy_says() -> None:
    async def scenario() -> None:
        rig = await running_old(floor=SafetyFloor(require_battery_pct_min=20))
        rig.vehicle.set(battery_pct=3)
        rig.cloud.serve(rig.signers.bundle(NEW, 2, policy=LENIENT))
        verdict = await rig.reconcile()
        assert (verdict.kind, verdict.codes) == ("blocked", (ReasonCode.DENY_LOW_BATTERY,))
        assert rig.runtime.status().release == OLD.key

    asyncio.run(scenario())


def test_a_test_rig_may_loosen_its_own_floor_and_the_policy_still_tightens_it() -> None:
    rig_floor = SafetyFloor(require_vehicle_stationary=False, deny_if_autonomous_mode=False)

    async def scenario() -> None:
        rig = await running_old(floor=rig_floor)
        rig.vehicle.set(speed_mps=25, autonomous_mode=True)
        rig.cloud.serve(rig.signers.bundle(NEW, 2))  # the default policy: both gates on
        verdict = await rig.reconcile()
        assert verdict.codes == (ReasonCode.DENY_MOVING, ReasonCode.DENY_AUTONOMOUS_MODE)
        rig.cloud.serve(rig.signers.bundle(NEW, 3, policy=LENIENT))
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == NEW.key

    asyncio.run(scenario())


def run_options(monkeypatch: pytest.MonkeyPatch, *argv: str) -> RunOptions:
    """The RunOptions `muto agent run ARGV` would start the agent with."""
    parser = argparse.ArgumentParser()
    agent_cli.register(parser.add_subparsers())
    args = parser.parse_args(["agent", "run", "--vehicle-id", "car-1", "--data-dir", "d", *argv])
    seen: list[RunOptions] = []

    async def serve(build: object, options: RunOptions, *rest: object) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(agent_cli, "_serve", serve)
    assert agent_cli.run(args) == 0
    return seen[0]


def test_the_floor_comes_from_the_command_line_and_defaults_to_safe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run_options(monkeypatch).floor == SafetyFloor()
    assert SafetyFloor().require_vehicle_stationary and SafetyFloor().deny_if_autonomous_mode
    loosened = run_options(
        monkeypatch,
        "--allow-apply-while-moving",
        "--allow-apply-in-autonomous-mode",
        "--min-battery-pct",
        "15",
    )
    assert loosened.floor == SafetyFloor(
        require_vehicle_stationary=False, deny_if_autonomous_mode=False, require_battery_pct_min=15
    )
