"""The agent's own figures: in its health report, and on the optional local /metrics
port; prometheus_client is loaded only when that port is asked for."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from muto.agent.figures import AgentFigures, journal_bytes
from muto.agent.journal.journal import DB_NAME
from muto.agent.journal.state import JournalState, LastApply
from muto.agent.metrics_port import serve_metrics
from muto.agent.runtime.base import RuntimeStatus
from muto.domain.vehicle_state import VehicleState
from tests.conftest import free_port
from tests.support.agent_rig import make_rig, release

A, B = release("1.0.0"), release("2.0.0")


def test_the_report_names_apply_readiness_outbox_journal_and_gate_blocks() -> None:
    figures = AgentFigures()
    figures.blocked(["DENY_MOVING", "DENY_AUTONOMOUS_MODE"])
    figures.blocked(["DENY_MOVING"])
    state = JournalState(last_apply=LastApply(sequence=3, apply_sec=1.5, readiness_sec=4.0))
    runtime = RuntimeStatus(release=None, alive=False, restart_count=2, crash_looping=False)

    assert figures.report(state, runtime, 8192) == {
        "restarts": 2.0,
        "outbox": 0.0,
        "apply_seconds": 1.5,
        "readiness_seconds": 4.0,
        "journal_bytes": 8192.0,
        "gate_blocks.DENY_AUTONOMOUS_MODE": 1.0,
        "gate_blocks.DENY_MOVING": 2.0,
    }
    assert "journal_bytes" not in figures.report(state, runtime, None)  # a memory journal


def test_journal_bytes_counts_the_database_and_its_write_ahead_log(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"x" * 4096)
    (tmp_path / f"{DB_NAME}-wal").write_bytes(b"x" * 100)
    assert journal_bytes(tmp_path) == 4196
    assert journal_bytes(None) is None


def test_a_blocked_pass_is_counted_once_and_shows_in_the_health_report() -> None:
    async def scenario() -> None:
        rig = make_rig()
        await rig.agent.start(loop=False)
        rig.cloud.serve(rig.signers.bundle(A, 1))
        assert (await rig.reconcile()).kind == "converged"
        rig.vehicle.state = VehicleState(speed_mps=3, free_disk_mb=1e5)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        for _ in range(3):  # still blocked on every poll: one block, not three
            assert (await rig.reconcile()).kind == "blocked"
        rig.agent.report_health(periodic=True)
        await rig.deliver()
        health = [r for r in rig.cloud.reports if r["kind"] == "health"][-1]
        metrics = health["metrics"]
        assert metrics["gate_blocks.DENY_MOVING"] == 1.0
        assert metrics["apply_seconds"] >= 0 and metrics["readiness_seconds"] >= 0
        assert "outbox" in metrics and "restarts" in metrics

    asyncio.run(scenario())


def test_the_local_port_serves_the_same_figures_in_prometheus_form() -> None:
    figures = {
        "outbox": 3.0,
        "journal_bytes": 65536.0,
        "apply_seconds": 2.5,
        "gate_blocks.DENY_MOVING": 4.0,
    }
    port = free_port()
    server, thread = serve_metrics(lambda: figures, port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("muto_agent_outbox_reports", ())] == 3
    assert samples[("muto_agent_journal_bytes", ())] == 65536
    assert samples[("muto_agent_last_apply_duration_seconds", ())] == 2.5
    assert samples[("muto_agent_gate_blocks_total", (("reason", "DENY_MOVING"),))] == 4
    assert ("muto_agent_last_readiness_duration_seconds", ()) not in samples  # not known yet


def test_an_agent_without_the_port_never_imports_prometheus_client() -> None:
    code = (
        "import sys, muto.agent.cli, muto.agent.compose, muto.agent.agent; "
        "print('prometheus_client' in sys.modules)"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert found.stdout.strip() == "False"
