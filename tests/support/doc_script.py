"""Runs a walkthrough from docs/ as written: its marked ```bash blocks, in order, in one
`bash -euo pipefail` with a real Mosquitto, `muto cloud serve` and agents it starts
itself; whatever it leaves running is killed with its process group."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, unavailable


def blocks(path: Path, marker: str) -> list[str]:
    """The ```bash blocks marked `<!-- marker -->`, in order."""
    found = re.findall(rf"<!-- {marker} -->\n```bash\n(.*?)```", path.read_text(), re.S)
    return list(found)


def run_walkthrough(
    script: str, tmp_path: Path, tools: tuple[str, ...], logs: tuple[str, ...]
) -> list[str]:
    """The script's output lines; fails naming its output and the tails of `logs`
    (files under `tmp_path`) when it exits non-zero or a traceback shows."""
    for tool in tools:
        if shutil.which(tool) is None:
            unavailable(f"{tool} is needed to run the docs walkthroughs")
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
        ["bash", "-euo", "pipefail", "-c", script],
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
    tails = "".join(
        f"\n--- {name}\n{(tmp_path / name).read_text(errors='replace')[-2000:]}"
        for name in logs
        if (tmp_path / name).exists()
    )
    assert proc.returncode == 0, out[-3000:] + err[-3000:] + tails
    assert "Traceback" not in err + tails
    return out.splitlines()
