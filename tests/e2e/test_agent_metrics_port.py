"""`muto agent run --metrics-port`: the agent process serves its figures to a local
Prometheus, and stops cleanly with them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from muto.trust.keys import Signer
from tests.conftest import free_port

MUTO = [sys.executable, "-m", "muto.cli"]


def test_an_offline_agent_serves_its_figures_on_the_local_port(tmp_path: Path) -> None:
    for name in ("release", "control"):
        (tmp_path / f"{name}.pub").write_text(Signer.generate().public_pem)
    trust = tmp_path / "trust.json"
    subprocess.run(
        [*MUTO, "agent", "trust", "--release-key", str(tmp_path / "release.pub"),
         "--control-plane-key", str(tmp_path / "control.pub"), "--out", str(trust)],
        check=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [*MUTO, "agent", "run", "--vehicle-id", "v1", "--data-dir", str(tmp_path / "data"),
         "--trust", str(trust), "--metrics-port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        text, deadline = "", time.monotonic() + 120
        while "muto_agent_journal_bytes" not in text:
            assert agent.poll() is None, (tmp_path / "agent.log").read_text()
            assert time.monotonic() < deadline, text or (tmp_path / "agent.log").read_text()
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.TransportError:
                time.sleep(0.2)
        assert "muto_agent_outbox_reports " in text
        assert "# TYPE muto_agent_gate_blocks_total counter" in text
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log.close()
