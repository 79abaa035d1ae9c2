"""docs/smoke-tests.md runs as written: the guide's steps 1-4 set up a real broker, cloud
and agent (process runtime); then each `smoke-test` block, with the Mosquitto clients,
in one shell."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, unavailable

DOC = Path(__file__).resolve().parents[2] / "docs" / "smoke-tests.md"
GUIDE = DOC.with_name("guide.md")
pytestmark = pytest.mark.mqtt
STOP = """
kill -TERM "$AGENT"; wait "$AGENT" || true
kill -TERM "$CLOUD"; wait "$CLOUD" || true
kill -TERM "$BROKER"; wait "$BROKER" || true
"""


def blocks(path: Path, marker: str) -> list[str]:
    found = re.findall(rf"<!-- {marker} -->\n```bash\n(.*?)```", path.read_text(), re.S)
    return list(found)


def test_the_smoke_tests_run_as_written(tmp_path: Path) -> None:
    for tool in ("curl", "jq", "mosquitto_sub", "mosquitto_pub"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is needed to run docs/smoke-tests.md")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        unavailable("mosquitto binary not found")
    setup = blocks(GUIDE, "guide-test")[:4]  # broker + cloud, release, vehicle, target
    smoke = blocks(DOC, "smoke-test")
    assert len(smoke) >= 6, "smoke-tests.md lost its smoke-test markers"
    path = os.pathsep.join(
        [str(Path(sys.executable).parent), str(Path(mosquitto).parent), os.environ["PATH"]]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
    env |= {
        "API_PORT": str(free_port()),
        "MQTT_PORT": str(free_port()),
        "PATH": path,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / ".config"),
    }
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", "\n".join([*setup, *smoke, STOP])],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    logs = "".join(
        f"\n--- {name}\n{(tmp_path / name).read_text(errors='replace')[-2000:]}"
        for name in ("cloud.log", "agent.log", "agent-again.log")
        if (tmp_path / name).exists()
    )
    assert proc.returncode == 0, out[-3000:] + err[-3000:] + logs
    lines = out.splitlines()
    leaves = {line.rsplit("/", 1)[-1] for line in lines if line.startswith("muto/default/")}
    assert {"presence", "metadata", "state", "components", "notify"} <= leaves, lines
    assert "muto/default/vehicles/car-1/agent/cfg/state" in lines
    assert '{"requestId":"smoke-1","ok":true}' in lines
    assert '{"heartbeatS":2,"telemetryEnabled":true,"logLevel":"debug"}' in lines
    assert sum(line.startswith("online 20") for line in lines) == 3  # retained + 2 beats
    assert '{"state":"offline","at":null}' in lines  # the Last Will
    assert "car-1 is back online" in lines
