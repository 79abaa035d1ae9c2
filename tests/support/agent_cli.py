"""`muto agent ...` run as a vehicle runs it, in a subprocess, and its one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MUTO = [sys.executable, "-m", "muto.cli"]
TIMEOUT_S = 30  # an agent that starts instead of refusing runs until killed: a failure


def muto(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MUTO, *argv], capture_output=True, text=True, timeout=TIMEOUT_S)


def run_agent(data_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return muto("agent", "run", "--vehicle-id", "car-1", "--data-dir", str(data_dir), *options)


def refused(done: subprocess.CompletedProcess[str], *named: str) -> str:
    """The one line a refusal printed; it names each of `named`."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    for name in named:
        assert name in lines[0], lines[0]
    return lines[0]
