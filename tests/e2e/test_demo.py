"""`muto demo --keep` end to end with a small fleet, one run proving both: every story's
expectations hold, and once they are told the dashboard stays browsable (with the
operator token it printed) until SIGINT. On the mosquitto binary (as CI has it) and,
under `make test-faults`, on the embedded broker (the fallback; `make test` checks that
broker carries what the agents rely on in tests/integration/test_embedded_broker.py)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from muto.sim.ros_story import ros_installed
from tests.conftest import Mosquitto
from tests.faults.runs import cases

KEPT = re.compile(r"kept running: browse (\S+)/ui/ \(operator token (\S+)\)")


@pytest.mark.parametrize("broker", cases(["mosquitto"], ["embedded"]))
def test_the_demo_holds_every_expectation_and_keeps_the_dashboard_browsable(
    tmp_path: Path, broker: str
) -> None:
    if broker == "mosquitto":
        Mosquitto(tmp_path)  # fails in CI, skips elsewhere, without the binary
    errors = (tmp_path / "demo.stderr").open("w")  # a file: a full pipe would stall the demo
    demo = subprocess.Popen(
        [
            *(sys.executable, "-m", "muto.cli", "demo", "--vehicles", "12"),
            *("--broker", broker, "--data-dir", str(tmp_path / "demo"), "--keep"),
        ],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    assert demo.stdout is not None
    told: list[str] = []
    try:
        deadline = time.monotonic() + 420
        found = None
        while found is None:
            assert time.monotonic() < deadline, "".join(told)[-3000:]
            line = demo.stdout.readline()
            assert line, "the demo ended before keeping anything running:\n" + "".join(told)
            told.append(line)
            found = KEPT.search(line)
        story = "".join(told)
        # Every story was told before the demo settled to keep running, none failed.
        assert "✘" not in story, story[-3000:]
        url, token = found.groups()
        assert f"dashboard {url}/ui/" in story  # printed at the start too
        with httpx.Client(base_url=url, timeout=30) as browser:
            assert browser.get("/ui/").status_code == 401  # the sign-in form
            signed = browser.post(
                "/ui/login", data={"token": token, "next": "/ui/rollouts"}, follow_redirects=True
            )
            assert signed.status_code == 200
            assert "demo-1.1.0" in signed.text  # the demo's rollouts are there to look at
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
        assert demo.returncode == 0, story + rest + errors_told(tmp_path)
        # Two more with the `ros` extra: a vehicle with a real ROS 2 stack (ros_story.py).
        held = 13 if ros_installed() else 11
        assert f"all {held} expectations held" in rest, story + rest
        assert "✘" not in rest
        # What the demo tells the user to run next works on what it left behind.
        journal = sorted((tmp_path / "demo" / "vehicles").iterdir())[0]
        listed = subprocess.run(
            [
                *(sys.executable, "-m", "muto.cli", "agent", "journal", "list"),
                *("--data-dir", str(journal)),
            ],
            capture_output=True,
            text=True,
        )
        assert listed.returncode == 0 and "ApplySucceeded" in listed.stdout
    finally:
        if demo.poll() is None:  # a failed check: let it stop its cloud and broker too
            demo.send_signal(signal.SIGINT)
            try:
                demo.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.communicate()
        errors.close()


def errors_told(tmp_path: Path) -> str:
    return (tmp_path / "demo.stderr").read_text()[-3000:]
