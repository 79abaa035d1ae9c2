"""Gate inputs: the state file fails closed, free disk is measured when not given, and
the fault-injection switch knows its points."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from muto.agent.kill import KillSwitch
from muto.agent.safety import FileStateProvider, SimulatedStateProvider, with_free_disk
from muto.agent.safety.provider import UNKNOWN
from muto.domain.desired import Policy
from muto.domain.gates import evaluate_gates
from muto.domain.reasons import ReasonCode
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import encode
from tests.support.agent_rig import T0


def test_a_missing_or_unreadable_state_file_blocks_every_enabled_gate(tmp_path: Path) -> None:
    provider = FileStateProvider(tmp_path / "state.json")
    assert provider.read() == UNKNOWN and provider.error is not None
    assert evaluate_gates(Policy(require_battery_pct_min=20), provider.read(), T0) == [
        ReasonCode.DENY_MOVING,
        ReasonCode.DENY_AUTONOMOUS_MODE,
        ReasonCode.DENY_LOW_BATTERY,
    ]
    (tmp_path / "state.json").write_text('{"speedMps": -1}')
    assert provider.read() == UNKNOWN and "speedMps" in (provider.error or "")


@pytest.mark.parametrize(
    ("written", "named"),
    [
        ("{}", "speedMps"),
        ('{"batteryPct": 80}', "speedMps"),
        ('{"speedMps": 0, "batteryPct": 80}', "autonomousMode"),
        ('{"speedMps": 0, "autonomousMode": false}', "batteryPct"),
        ('{"speedMps": 0, "autonomousMode": "false", "batteryPct": 80}', "$.autonomousMode"),
    ],
)
def test_a_state_file_silent_or_wrong_on_a_gate_input_blocks_and_says_which(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, written: str, named: str
) -> None:
    """Never the defaults (a stationary, manual, fully charged vehicle): an outside
    review found `{"batteryPct": 80}` and `{}` let a release apply."""
    path = tmp_path / "state.json"
    path.write_text(written)
    provider = FileStateProvider(path)
    with caplog.at_level("WARNING", logger="muto.agent.safety"):
        assert provider.read() == UNKNOWN
        provider.read()
        os.utime(path, ns=(1, 1))
        provider.read()  # the same error, read again: said once
    assert evaluate_gates(Policy(require_battery_pct_min=20), provider.read(), T0) == [
        ReasonCode.DENY_MOVING,
        ReasonCode.DENY_AUTONOMOUS_MODE,
        ReasonCode.DENY_LOW_BATTERY,
    ]
    (said,) = [r.getMessage() for r in caplog.records]
    assert str(path) in said and named in said
    assert named in (provider.error or "")
    path.write_text('{"speedMps": 0, "autonomousMode": false, "batteryPct": 80}')
    os.utime(path, ns=(2, 2))
    assert provider.read().battery_pct == 80 and provider.error is None


def test_the_state_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(encode(VehicleState(battery_pct=80)))
    provider = FileStateProvider(path)
    first = provider.read()
    assert first.battery_pct == 80 and provider.error is None
    assert provider.read() is first
    path.write_bytes(encode(VehicleState(battery_pct=40, speed_mps=2)))
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    assert provider.read().battery_pct == 40


def test_free_disk_is_measured_only_when_the_state_does_not_say(tmp_path: Path) -> None:
    measured = with_free_disk(VehicleState(), tmp_path)
    assert measured.free_disk_mb is not None and measured.free_disk_mb > 0
    given = VehicleState(free_disk_mb=12.5)
    assert with_free_disk(given, tmp_path) is given


def test_the_simulated_provider_changes_on_request() -> None:
    provider = SimulatedStateProvider()
    provider.set(speed_mps=3.0)
    assert provider.read().speed_mps == 3.0


def test_the_kill_switch_knows_its_points() -> None:
    assert KillSwitch.from_env({"MUTO_AGENT_KILL_AT": "apply:done"}).at == "apply:done"
    assert KillSwitch.from_env({}).at is None
    KillSwitch("rollback")("apply")  # another point: nothing happens
    with pytest.raises(ValueError, match="MUTO_AGENT_KILL_AT"):
        KillSwitch("reboot")
