"""The planner and the journal with a desired state that says "run nothing" (a
rollout's rollback of a vehicle's first release, issue 13 item 4): stop what runs, as
the gates allow, then converged; never apply a release."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from muto.agent.journal.events import DesiredVerified, RuntimeStopped
from muto.agent.journal.fold import evolve
from muto.agent.journal.state import JournalState
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import plan
from muto.agent.reconcile.steps import Apply, NoteGates, QueueReport, Rollback, StopRuntime
from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import T0, A, B, desired_of, journal_of

PARKED = VehicleState(free_disk_mb=100_000)
MOVING = VehicleState(free_disk_mb=100_000, speed_mps=3.0)


def nothing(sequence: int = 3, ttl_h: float = 24) -> DesiredVerified:
    """A verified "run nothing" document: no stack, no release."""
    d = desired_of(A, sequence=sequence, ttl_h=ttl_h)
    return replace(d, document=replace(d.document, stack=None), release=None, release_digest=None)


def runs(key: str | None, crash_looping: bool = False) -> RuntimeStatus:
    if key is None:
        return STOPPED
    return RuntimeStatus(release=key, alive=True, restart_count=0, crash_looping=crash_looping)


def seen(state: JournalState, status: RuntimeStatus, vehicle: VehicleState = PARKED) -> Observed:
    return Observed(journal=state, runtime=status, vehicle=vehicle, cached=frozenset())


def test_a_running_stack_is_stopped_then_the_vehicle_reports_converged() -> None:
    state = journal_of(nothing(), running_key=B.key)
    first = plan(state.desired, seen(state, runs(B.key)), T0)
    assert first.verdict is None
    assert isinstance(first.steps[-1], StopRuntime)
    assert not any(isinstance(s, Apply | Rollback) for s in first.steps)

    evolve(state, RuntimeStopped(at=T0, reason="stopped"))
    second = plan(state.desired, seen(state, STOPPED), T0)
    assert second.verdict is not None and second.verdict.kind == "converged"
    report = [s for s in second.steps if isinstance(s, QueueReport)]
    assert [(r.outcome.revision, r.outcome.status) for r in report] == [
        ("dsr_3", ReconcileStatus.CONVERGED)
    ]


def test_drift_and_an_unjournaled_stack_are_stopped_not_restored() -> None:
    state = journal_of(nothing(), running_key=B.key)
    drifted = plan(state.desired, seen(state, runs(A.key)), T0)
    assert isinstance(drifted.steps[-1], StopRuntime)
    fresh = journal_of(nothing())
    stray = plan(fresh.desired, seen(fresh, runs(A.key)), T0)
    assert isinstance(stray.steps[-1], StopRuntime)


def test_the_gates_hold_the_stop_back_like_any_change() -> None:
    state = journal_of(nothing(), running_key=B.key)
    held = plan(state.desired, seen(state, runs(B.key), MOVING), T0)
    assert held.verdict is not None and held.verdict.kind == "blocked"
    assert ReasonCode.DENY_MOVING in held.verdict.codes
    assert not any(isinstance(s, StopRuntime) for s in held.steps)
    assert any(isinstance(s, NoteGates) for s in held.steps)


def test_an_expired_run_nothing_document_is_rejected() -> None:
    state = journal_of(nothing(ttl_h=-1), running_key=B.key)
    done = plan(state.desired, seen(state, runs(B.key)), T0 + timedelta(hours=1))
    assert done.verdict is not None and done.verdict.kind == "rejected"


def test_a_crash_loop_is_still_the_agent_s_own_rollback_first() -> None:
    state = journal_of(nothing(), running_key=B.key)
    looping = plan(state.desired, seen(state, runs(B.key, crash_looping=True)), T0)
    assert not any(isinstance(s, StopRuntime) for s in looping.steps)


@given(
    running_key=st.sampled_from([None, A.key, B.key]),
    runtime_key=st.sampled_from([None, A.key, B.key]),
    speed=st.sampled_from([0.0, 3.0]),
)
def test_run_nothing_never_applies_a_release(
    running_key: str | None, runtime_key: str | None, speed: float
) -> None:
    """Whatever runs and whatever the gates say: no Apply, no rollback to a release;
    converged exactly when nothing runs."""
    state = journal_of(nothing(), running_key=running_key)
    vehicle = VehicleState(free_disk_mb=100_000, speed_mps=speed)
    decided = plan(state.desired, seen(state, runs(runtime_key), vehicle), T0)
    assert not any(isinstance(s, Apply | Rollback) for s in decided.steps)
    converged = decided.verdict is not None and decided.verdict.kind == "converged"
    assert converged == (running_key is None and runtime_key is None)


def test_the_journal_keeps_a_run_nothing_desired_state() -> None:
    state = journal_of(None, running_key=B.key)
    evolve(state, nothing())
    assert state.desired is not None and state.desired.release is None
    assert B.key in state.releases  # the running release is kept (a rollback target)
