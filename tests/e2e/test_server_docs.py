"""docs/api.md's walkthrough runs as written against a real server (SQLite): every
curl succeeds (`-f`), every `jq -e` holds, and the printed answers are the ones the
prose promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import unavailable
from tests.support.api_server import running

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def walkthrough() -> str:
    text = DOC.read_text(encoding="utf-8")
    marker = text.index("<!-- api-doc-test -->")
    block = re.search(r"```bash\n(.*?)```", text[marker:], re.S)
    assert block, "the api-doc-test marker must precede a bash block"
    return block.group(1)


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is needed to run docs/api.md")
    work = tmp_path / "work"
    work.mkdir()
    with running("sqlite", tmp_path / "data", "operator") as (server, tokens):
        env = {
            **os.environ,
            "API": server.url,
            "TOKEN": tokens["operator"][0],
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", walkthrough()],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "veh-0002" in lines  # the second page
    assert "304" in lines
    assert lines.count("canary") == 1
    assert "rolled_back" in lines
    assert '{"reportId":"r-1","recorded":true}' in lines
    assert "Vehicle.ReconcileReported" in lines
