"""`muto demo --keep`: the demo prints the dashboard's address, and once its stories are
told the dashboard stays browsable (with the operator token it printed) until SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEPT = re.compile(r"kept running: browse (\S+)/ui/ \(operator token (\S+)\)")


def test_the_demo_keeps_the_dashboard_browsable_until_interrupted(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "muto.cli",
            "demo",
            "--vehicles",
            "12",
            "--broker",
            "embedded",
            "--data-dir",
            str(tmp_path / "demo"),
            "--keep",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert demo.stdout is not None
    told: list[str] = []
    try:
        deadline = time.monotonic() + 240
        found = None
        while found is None:
            assert time.monotonic() < deadline, "".join(told)[-3000:]
            line = demo.stdout.readline()
            assert line, "the demo ended before keeping anything running:\n" + "".join(told)
            told.append(line)
            found = KEPT.search(line)
        url, token = found.groups()
        assert f"dashboard {url}/ui/" in "".join(told)  # printed at the start too
        with httpx.Client(base_url=url, timeout=30) as browser:
            assert browser.get("/ui/").status_code == 401  # the sign-in form
            signed = browser.post(
                "/ui/login", data={"token": token, "next": "/ui/rollouts"}, follow_redirects=True
            )
            assert signed.status_code == 200
            assert "demo-1.1.0" in signed.text  # the demo's rollouts are there to look at
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
        assert demo.returncode == 0, "".join(told) + rest
        assert "expectations held" in rest
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
