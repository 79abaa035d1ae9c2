"""`muto ... | head`: when the reader of stdout goes away, every muto command stops
quietly (like `cat`): no BrokenPipeError traceback."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from tests.support.agent_rig import T0


def test_journal_list_into_head_ends_without_a_traceback(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        for i in range(3000):  # well over a pipe's 64 KiB of JSON lines
            journal.append(
                ev.DesiredReceived(
                    at=T0 + timedelta(seconds=i), revision=f"r{i}", sequence=i + 1, etag=None
                )
            )
    done = subprocess.run(
        [
            "bash",
            "-c",
            f"{sys.executable} -m muto.cli agent journal list --json --data-dir {tmp_path}"
            " | head -1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
