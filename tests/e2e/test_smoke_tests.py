"""docs/smoke-tests.md runs as written: the guide's steps 1-4 set up a real broker, cloud
and agent (process runtime); then each `smoke-test` block, with the Mosquitto clients,
in one shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.doc_script import blocks, run_walkthrough

DOC = Path(__file__).resolve().parents[2] / "docs" / "smoke-tests.md"
GUIDE = DOC.with_name("guide.md")
pytestmark = pytest.mark.mqtt
STOP = """
kill -TERM "$AGENT"; wait "$AGENT" || true
kill -TERM "$CLOUD"; wait "$CLOUD" || true
kill -TERM "$BROKER"; wait "$BROKER" || true
"""


def test_the_smoke_tests_run_as_written(tmp_path: Path) -> None:
    setup = blocks(GUIDE, "guide-test")[:4]  # broker + cloud, release, vehicle, target
    smoke = blocks(DOC, "smoke-test")
    assert len(smoke) >= 6, "smoke-tests.md lost its smoke-test markers"
    lines = run_walkthrough(
        "\n".join([*setup, *smoke, STOP]),
        tmp_path,
        ("curl", "jq", "mosquitto_sub", "mosquitto_pub"),
        ("cloud.log", "agent.log", "agent-again.log"),
    )
    leaves = {line.rsplit("/", 1)[-1] for line in lines if line.startswith("muto/default/")}
    assert {"presence", "metadata", "state", "components", "notify"} <= leaves, lines
    assert "muto/default/vehicles/car-1/agent/cfg/state" in lines
    assert '{"requestId":"smoke-1","ok":true}' in lines
    assert '{"heartbeatS":2,"telemetryEnabled":true,"logLevel":"debug"}' in lines
    assert sum(line.startswith("online 20") for line in lines) == 3  # retained + 2 beats
    assert '{"state":"offline","at":null}' in lines  # the Last Will
    assert "car-1 is back online" in lines
