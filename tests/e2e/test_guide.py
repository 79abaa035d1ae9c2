"""docs/guide.md runs as written: its `guide-test` blocks, in order, in one shell, with
a real Mosquitto, `muto cloud serve` and one `muto agent run` on the process runtime."""

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

DOC = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
pytestmark = pytest.mark.mqtt


def guide_script() -> str:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- guide-test -->\n```bash\n(.*?)```", text, re.S)
    assert len(blocks) >= 5, "the guide's blocks lost their guide-test markers"
    return "\n".join(blocks)


def test_the_guide_runs_as_written(tmp_path: Path) -> None:
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is needed to run docs/guide.md")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        unavailable("mosquitto binary not found")
    path = os.pathsep.join(
        [str(Path(sys.executable).parent), str(Path(mosquitto).parent), os.environ["PATH"]]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
    env |= {
        "API_PORT": str(free_port()),
        "MQTT_PORT": str(free_port()),
        "PATH": path,
        "HOME": str(tmp_path),  # the login context goes to $HOME/.config/muto
        "XDG_CONFIG_HOME": str(tmp_path / ".config"),
    }
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", guide_script()],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its background processes are killed with the group
    )
    try:
        out, err = proc.communicate(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    logs = "".join(
        f"\n--- {name}\n{(tmp_path / name).read_text(errors='replace')[-2000:]}"
        for name in ("cloud.log", "agent.log", "broker.log")
        if (tmp_path / name).exists()
    )
    assert proc.returncode == 0, out[-3000:] + err[-3000:] + logs
    lines = out.splitlines()
    assert "hello@1.0.0" in lines  # the running release
    assert "hello from hello@1.0.0" in lines  # the stack's own output, from its log
    assert "info" in lines  # logLevel back to its default
    assert any(line.startswith("request refresh-") and ": ok, " in line for line in lines)
    assert any(line.startswith("active artifacts/sha256:") for line in lines)
    assert (tmp_path / "cloud" / "artifacts").is_dir()
    assert "Traceback" not in err + logs
