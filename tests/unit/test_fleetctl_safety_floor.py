"""`muto vehicles get` says the vehicle's own safety floor, a loosening first: an operator
must see a test rig that applies while moving before assigning it anything."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from muto.domain.gates import SafetyFloor
from muto.domain.wire import to_builtins
from muto.fleetctl.vehicles import _detail


def shown(floor: Any) -> str:
    vehicle = {
        "vehicleId": "car-1",
        "reported": {
            "agent": {"agentVersion": "0.1.0", "runtime": "process", "safetyFloor": floor},
            "agentAt": "2026-12-06T03:00:00+00:00",
        },
    }
    console = Console(width=200, record=True)
    console.print(_detail(vehicle))
    line = next(ln for ln in console.export_text().splitlines() if "safetyFloor" in ln)
    return line.split("safetyFloor", 1)[1].strip(" │")


@pytest.mark.parametrize(
    ("floor", "said"),
    [
        (SafetyFloor(), "requires stationary, manual mode"),
        (
            SafetyFloor(require_battery_pct_min=30),
            "requires stationary, manual mode, battery ≥ 30 %",
        ),
        (
            SafetyFloor(require_vehicle_stationary=False),
            "loosened: applies while moving; requires manual mode",
        ),
        (
            SafetyFloor(require_vehicle_stationary=False, deny_if_autonomous_mode=False),
            "loosened: applies while moving, applies in autonomous mode; requires nothing",
        ),
    ],
)
def test_the_floor_is_said_a_loosening_first(floor: SafetyFloor, said: str) -> None:
    assert shown(to_builtins(floor)) == said


def test_an_agent_too_old_to_say_it_is_not_shown_as_safe() -> None:
    assert shown(None) == "not said (an agent before muto.agent-metadata.v2)"
