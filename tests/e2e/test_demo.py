"""`muto demo` end to end with a small fleet: every story's expectations hold, on the
mosquitto binary (as CI has it) and, under `make test-faults`, on the embedded broker
(the fallback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from muto.sim.ros_story import ros_installed
from tests.conftest import Mosquitto
from tests.faults.runs import cases


@pytest.mark.parametrize("broker", cases(["mosquitto"], ["embedded"]))
def test_the_demo_holds_every_expectation(tmp_path: Path, broker: str) -> None:
    if broker == "mosquitto":
        Mosquitto(tmp_path)  # fails in CI, skips elsewhere, without the binary
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "muto.cli",
            "demo",
            "--vehicles",
            "12",
            "--broker",
            broker,
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Two more with the `ros` extra: a vehicle with a real ROS 2 stack (ros_story.py).
    held = 13 if ros_installed() else 11
    assert f"all {held} expectations held" in done.stdout
    assert "✘" not in done.stdout
    # What the demo tells the user to run next works on what it left behind.
    journal = sorted((tmp_path / "demo" / "vehicles").iterdir())[0]
    listed = subprocess.run(
        [sys.executable, "-m", "muto.cli", "agent", "journal", "list", "--data-dir", str(journal)],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0 and "ApplySucceeded" in listed.stdout
