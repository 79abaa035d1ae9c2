"""`muto demo` checks its summary (the fleet view) against the agents' own journals."""

from __future__ import annotations

from datetime import UTC, datetime

from muto.agent.journal.state import JournalState, Outcome, Running
from muto.domain.reports import ReconcileStatus
from muto.sim.demo import disagreements

T = datetime(2026, 1, 1, tzinfo=UTC)


def journal(running: str | None, *statuses: ReconcileStatus) -> JournalState:
    return JournalState(
        running=Running(key=running, since=T, position=1, revision=None, cause="converged")
        if running
        else None,
        reported={
            f"dsr_{i}": Outcome(revision=f"dsr_{i}", sequence=i, status=s)
            for i, s in enumerate(statuses)
        },
    )


def test_the_view_of_make_demos_late_vehicle_is_caught() -> None:
    """vehicle-v4-us-east-00045: blocked with its clock ahead, then converged; the view
    said blocked, running nothing."""
    view = [{"vehicleId": "v45", "runningRelease": None, "lastStatus": "blocked"}]
    late = journal("core@1.0.0", ReconcileStatus.BLOCKED, ReconcileStatus.CONVERGED)
    assert disagreements(view, {"v45": late}) == [
        "v45: view (None, 'blocked'), journal ('core@1.0.0', 'converged')"
    ]
    view[0].update(runningRelease="core@1.0.0", lastStatus="converged")
    assert disagreements(view, {"v45": late}) == []


def test_undelivered_reports_and_missing_vehicles_disagree() -> None:
    assert disagreements([], {"v1": journal(None)}) == []  # nothing to tell yet
    assert disagreements([], {"v1": journal("core@1.0.0", ReconcileStatus.CONVERGED)}) == [
        "v1: view (None, None), journal ('core@1.0.0', 'converged')"
    ]
