"""A verdict names the revision it judges. A crash loop (or a restore, and its failure) of
the release that runs while a newer revision waits for another release (gates, a slow
download) is about the running release, under the revision it runs under: reported under
the newer one, the cloud would count a rollback against a release that never ran here.
The newer revision is still applied once the gates allow."""

from __future__ import annotations

import asyncio

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.journal.journal import fold_records
from muto.agent.journal.state import JournalState, Outcome, Running
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import plan
from muto.agent.reconcile.steps import Apply, NoteCrashLoop, NoteRestoreFailed, QueueReport
from muto.agent.reports import health_of
from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.agent.runtime.simulated import SimulatedBehaviour
from muto.domain.reasons import ReasonCode
from muto.domain.reports import HealthStatus, ReconcileStatus
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import (
    MOVING,
    PARKED,
    T0,
    A,
    B,
    C,
    Rig,
    codes,
    converged_on,
    desired_of,
    failing,
    journal_of,
    run,
    started,
)

CRASH = ReasonCode.CRASH_LOOP_DETECTED
EVERY = frozenset(a.digest for r in (A, B, C) for a in r.artifacts)


def steady(key: str) -> RuntimeStatus:
    return RuntimeStatus(release=key, alive=True, restart_count=0, crash_looping=False)


def looping(key: str) -> RuntimeStatus:
    return RuntimeStatus(release=key, alive=True, restart_count=9, crash_looping=True)


def seen(
    state: JournalState,
    runtime: RuntimeStatus,
    vehicle: VehicleState = MOVING,
    failed: tuple[str, ...] = (),
) -> Observed:
    return Observed(
        journal=state,
        runtime=runtime,
        vehicle=vehicle,
        cached=EVERY,
        download_failures={d: ReasonCode.ARTIFACT_DOWNLOAD_FAILED for d in failed},
    )


def runs_under(state: JournalState, revision: str, sequence: int) -> JournalState:
    assert state.running is not None
    state.running = Running(
        key=state.running.key,
        since=T0,
        position=1,
        revision=revision,
        sequence=sequence,
        cause="converged",
    )
    return state


# -- the planner: which revision a verdict on the running release is made under ----------


def test_a_crash_loop_while_a_newer_revision_waits_is_judged_under_the_running_one() -> None:
    desired = desired_of(B, 2)  # gated: the vehicle is moving
    state = runs_under(journal_of(desired, A.key), "dsr_1", 1)
    decided = plan(desired, seen(state, looping(A.key)), T0)
    assert decided.steps == (NoteCrashLoop(release_key=A.key, revision="dsr_1", sequence=1),)


def test_a_crash_loop_of_the_desired_release_is_judged_under_the_desired_revision() -> None:
    desired = desired_of(A, 2)  # dsr_2 names A again (a new policy, say)
    state = runs_under(journal_of(desired, A.key), "dsr_1", 1)
    decided = plan(desired, seen(state, looping(A.key)), T0)
    assert decided.steps == (NoteCrashLoop(release_key=A.key, revision="dsr_2", sequence=2),)


def test_a_restore_while_a_newer_revision_waits_runs_under_the_running_revision() -> None:
    desired = desired_of(B, 2)
    state = runs_under(journal_of(desired, A.key), "dsr_1", 1)
    (restore,) = plan(desired, seen(state, STOPPED), T0).steps
    assert isinstance(restore, Apply) and restore.restore
    assert (restore.release_key, restore.revision, restore.sequence) == (A.key, "dsr_1", 1)


def test_a_restore_that_cannot_get_its_artifacts_fails_under_the_running_revision() -> None:
    desired = desired_of(B, 2)
    state = runs_under(journal_of(desired, A.key), "dsr_1", 1)
    state.known_good = [C.key, A.key]
    failed = (A.artifacts[0].digest,)
    (step,) = plan(desired, seen(state, STOPPED, failed=failed), T0).steps
    assert step == NoteRestoreFailed(
        release_key=A.key, code=ReasonCode.ARTIFACT_DOWNLOAD_FAILED, revision="dsr_1", sequence=1
    )


def test_the_desired_verdict_is_said_again_after_a_report_on_an_older_revision() -> None:
    desired = desired_of(B, 2)
    state = journal_of(desired, C.key, gates=[ReasonCode.DENY_MOVING], gates_sequence=2)
    blocked = Outcome(
        revision="dsr_2", sequence=2, status=ReconcileStatus.BLOCKED, codes=[ReasonCode.DENY_MOVING]
    )
    state.reported = {"dsr_2": blocked}
    assert plan(desired, seen(state, steady(C.key)), T0).steps == ()
    state.restate = "dsr_2"
    older = Outcome(
        revision="dsr_1",
        sequence=1,
        status=ReconcileStatus.ROLLED_BACK,
        codes=[CRASH, ReasonCode.ROLLBACK_APPLIED],
    )
    state.unreported = older
    decided = plan(desired, seen(state, steady(C.key)), T0)
    assert decided.steps == (QueueReport(outcome=older), QueueReport(outcome=blocked))


@given(
    st.sampled_from([A, B, C]),
    st.integers(2, 4),
    st.sampled_from([A.key, B.key, C.key]),
    st.none() | st.sampled_from(["dsr_1", "dsr_2"]),
    st.sampled_from([looping, lambda key: STOPPED, lambda key: looping(C.key)]),
    st.sampled_from([PARKED, MOVING]),
    st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_a_verdict_on_the_running_release_names_the_revision_it_runs_under(
    wanted: object,
    sequence: int,
    running: str,
    revision: str | None,
    runtime: object,
    vehicle: VehicleState,
    lost: bool,
) -> None:
    """Invariant: a crash loop, a restore or a failed restore of the running release is
    made under the desired revision only when that revision wants the release (or the
    journal does not say what it runs under); else under the revision it runs under."""
    desired = desired_of(wanted, sequence)  # type: ignore[arg-type]
    state = journal_of(desired, running)
    state.known_good = [k for k in (A.key, B.key, C.key) if k != running] + [running]
    if revision is not None:
        runs_under(state, revision, int(revision[-1]))
    status = runtime(running)  # type: ignore[operator]
    failed = tuple(a.digest for a in state.releases[running].artifacts) if lost else ()
    decided = plan(desired, seen(state, status, vehicle, failed), T0)
    verdicts = [
        s
        for s in decided.steps
        if isinstance(s, (NoteCrashLoop, NoteRestoreFailed)) or (isinstance(s, Apply) and s.restore)
    ]
    for step in verdicts:
        assert step.release_key == running
        if (desired.release is not None and desired.release.key == running) or revision is None:
            assert (step.revision, step.sequence) == (desired.revision, desired.sequence)
        else:
            assert (step.revision, step.sequence) == (revision, int(revision[-1]))


# -- the fold: the event carries the revision, decided when it was written ---------------


def folded(*events: ev.Event) -> JournalState:
    """The state a journal of `events` lives through (replaying it gives the same)."""
    journal = Journal.memory()
    journal.append(*events)
    assert msgspec.json.encode(fold_records(journal.records())) == msgspec.json.encode(
        journal.state
    )
    return journal.state


def applied(key: str, revision: str, sequence: int, restore: bool = False) -> list[ev.Event]:
    return [
        ev.ApplyStarted(
            at=T0,
            release_key=key,
            revision=revision,
            sequence=sequence,
            replacing=None,
            restore=restore,
        ),
        ev.ApplySucceeded(at=T0, release_key=key, apply_sec=1.0),
        ev.ReadinessPassed(at=T0, release_key=key, readiness_sec=1.0),
    ]


def ran_a_then_desired_b(*more: ev.Event) -> JournalState:
    """C, then A converged under dsr_1 (one document naming C, as the fold needs no more);
    dsr_2 (B) accepted, not applied yet (gated, downloading)."""
    return folded(
        desired_of(C, 1),
        *applied(C.key, "dsr_1", 1),
        *applied(A.key, "dsr_1", 1),
        desired_of(B, 2),
        *more,
    )


def test_a_running_crash_loop_is_recorded_and_rolled_back_under_the_revision_it_names() -> None:
    crash = ev.CrashLoopDetected(
        at=T0, release_key=A.key, during="running", revision="dsr_1", sequence=1
    )
    state = ran_a_then_desired_b(crash)
    assert state.failed[A.key].revision == "dsr_1" and state.failed[A.key].sequence == 1
    assert state.rollback_due is not None
    assert (state.rollback_due.revision, state.rollback_due.sequence) == ("dsr_1", 1)
    state = ran_a_then_desired_b(
        crash,
        ev.RollbackStarted(at=T0, failed_key=A.key, target_key=C.key, causes=[CRASH]),
        ev.RollbackApplied(
            at=T0, failed_key=A.key, target_key=C.key, causes=[CRASH], readiness_sec=1.0
        ),
    )
    assert state.unreported == Outcome(
        revision="dsr_1",
        sequence=1,
        status=ReconcileStatus.ROLLED_BACK,
        codes=[CRASH, ReasonCode.ROLLBACK_APPLIED],
    )
    assert state.running is not None
    assert (state.running.key, state.running.revision, state.running.sequence) == (
        C.key,
        "dsr_1",
        1,
    )
    assert state.restate == "dsr_2"  # dsr_2's verdict is said again after that report
    assert B.key not in state.failed  # B never ran: nothing about it failed


def test_a_crash_loop_from_an_older_journal_folds_as_it_did() -> None:
    state = ran_a_then_desired_b(ev.CrashLoopDetected(at=T0, release_key=A.key, during="running"))
    assert state.failed[A.key].revision == "dsr_2" and state.rollback_due is not None
    assert state.rollback_due.revision == "dsr_2"


def test_a_restore_that_cannot_get_its_artifacts_fails_under_the_revision_it_names() -> None:
    lost = ev.ApplyFailed(
        at=T0,
        release_key=A.key,
        code=ReasonCode.ARTIFACT_DOWNLOAD_FAILED,
        revision="dsr_1",
        sequence=1,
    )
    state = ran_a_then_desired_b(lost)
    assert state.rollback_due is not None
    assert (state.rollback_due.revision, state.rollback_due.sequence) == ("dsr_1", 1)


def test_a_restore_keeps_the_revision_and_the_cause_of_what_ran() -> None:
    # An older agent's restore carried the desired revision: A still runs under dsr_1.
    state = ran_a_then_desired_b(*applied(A.key, "dsr_2", 2, restore=True))
    assert state.running is not None
    assert (state.running.revision, state.running.sequence, state.running.cause) == (
        "dsr_1",
        1,
        "converged",
    )


def test_a_converged_report_for_a_revision_naming_what_runs_adopts_it() -> None:
    """dsr_2 names A again: converged without an apply, A now runs under dsr_2 (a later
    crash loop of A, once dsr_3 wants C, is judged there)."""
    ran = [desired_of(A, 1), *applied(A.key, "dsr_1", 1), desired_of(A, 2)]
    state = folded(*ran)
    assert state.running is not None and state.running.revision == "dsr_1"
    said = ev.ReportQueued(
        at=T0,
        report_id="r",
        kind="reconcile",
        body=msgspec.Raw(b"{}"),
        revision="dsr_2",
        status="converged",
        codes=[],
    )
    state = folded(*ran, said)
    assert state.running is not None
    assert (state.running.revision, state.running.sequence) == ("dsr_2", 2)


# -- a whole agent, in process -----------------------------------------------------------


async def b_runs_then_c_waits(rig: Rig) -> None:
    """A then B converged (B under dsr_2); dsr_3 (C) accepted but gated: moving."""
    await converged_on(rig, A, 1)
    rig.runtime.time_scale = 1.0  # B restarts every second of the rig's clock
    await converged_on(rig, B, 2)
    rig.vehicle.state = MOVING
    rig.cloud.serve(rig.signers.bundle(C, 3))
    assert (await rig.reconcile()).kind == "blocked"


def test_a_crash_loop_while_a_newer_revision_is_gated_is_reported_under_its_own() -> None:
    async def scenario() -> None:
        rig = await started(behaviours={B.key: SimulatedBehaviour(restart_every_sec=1.0)})
        await b_runs_then_c_waits(rig)
        rig.clock.advance(5)
        assert rig.agent.drifted()
        assert (await rig.reconcile()).kind == "blocked"
        assert rig.runtime.status().release == A.key
        await rig.deliver()
        blocked = ("dsr_3", "blocked", ["DENY_MOVING"])
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            ("dsr_2", "converged", []),
            blocked,
            ("dsr_2", "rolled_back", ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"]),
            blocked,  # said again: the cloud's newest report is about dsr_3 again
        ]
        failure = rig.journal.state.failed[B.key]
        assert (failure.revision, failure.sequence) == ("dsr_2", 2)
        rig.vehicle.state = PARKED  # C never ran, nothing about it failed: applied now
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == C.key
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == ("dsr_3", "converged", [])
        assert [r for r in rig.cloud.reconcile_reports() if r[0] == "dsr_3"] == [
            blocked,
            blocked,
            ("dsr_3", "converged", []),
        ]

    run(scenario)


def test_a_restore_while_a_newer_revision_is_gated_runs_and_fails_under_its_own() -> None:
    async def scenario() -> None:
        rig = await started()
        await b_runs_then_c_waits(rig)
        before = rig.journal.state.position
        rig.runtime.halt()  # the stack stops outside muto: restored, gates or not
        rig.agent.drifted()
        rig.clock.advance(5)
        assert rig.agent.drifted()
        assert (await rig.reconcile()).kind == "blocked"
        assert rig.runtime.status().release == B.key
        (restore,) = [
            r.event for r in rig.journal.records(before) if isinstance(r.event, ev.ApplyStarted)
        ]
        assert restore.restore and (restore.revision, restore.sequence) == ("dsr_2", 2)
        running = rig.journal.state.running
        assert running is not None and (running.key, running.revision) == (B.key, "dsr_2")
        # The restore fails: B failed under dsr_2, rolled back to A; dsr_3 still waits.
        rig.runtime.behaviours = {B.key: failing(apply=True)}
        rig.runtime.halt()
        rig.agent.drifted()
        rig.clock.advance(5)
        assert rig.agent.drifted()
        assert (await rig.reconcile()).kind == "blocked"
        assert rig.runtime.status().release == A.key
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[2:] == [
            ("dsr_3", "blocked", ["DENY_MOVING"]),
            ("dsr_2", "rolled_back", ["APPLY_FAILED", "ROLLBACK_APPLIED"]),
            ("dsr_3", "blocked", ["DENY_MOVING"]),
        ]
        rig.vehicle.state = PARKED
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == C.key

    run(scenario)


NOWHERE_TO_GO = [CRASH, ReasonCode.NO_PREVIOUS_KNOWN_GOOD]


async def a_halts_while_b_waits(rig: Rig) -> None:
    """A, the only release that ran (dsr_1), crash-loops with nothing to roll back to,
    while dsr_2 (B) waits on a gate: the vehicle is moving."""
    rig.runtime.time_scale = 1.0  # A restarts every second of the rig's clock
    await converged_on(rig, A, 1)
    rig.vehicle.state = MOVING
    rig.cloud.serve(rig.signers.bundle(B, 2))
    assert (await rig.reconcile()).kind == "blocked"
    rig.clock.advance(5)
    assert rig.agent.drifted()
    assert (await rig.reconcile()).kind == "blocked"


def crash_looping_a() -> dict[str, SimulatedBehaviour]:
    return {A.key: SimulatedBehaviour(restart_every_sec=1.0)}


def a_halted_while_b_waits() -> list[ev.Event]:
    """The events a real agent journals for `a_halts_while_b_waits`: RollbackFailed, then
    RuntimeStopped (the runtime stopped), then the pass's reports."""

    async def scenario() -> list[ev.Event]:
        rig = await started(behaviours=crash_looping_a())
        await a_halts_while_b_waits(rig)
        return [r.event for r in rig.journal.records()]

    return asyncio.run(scenario())


def test_a_failed_rollback_while_a_newer_revision_waits_is_unhealthy_and_runs_nothing() -> None:
    """The fleet must not see a vehicle that runs nothing as merely waiting for B: health
    is `unhealthy` with the failure's codes and NOT_YET_APPLIED, and names nothing running
    (docs/agent.md, "Offline and reporting")."""

    async def scenario() -> None:
        rig = await started(behaviours=crash_looping_a())
        await a_halts_while_b_waits(rig)
        said = [type(r.event).__name__ for r in rig.journal.records()]
        assert said[-4:-2] == ["RollbackFailed", "RuntimeStopped"]
        assert rig.runtime.status().release is None
        rig.agent.report_health()
        await rig.deliver()
        health = [r for r in rig.cloud.reports if r["kind"] == "health"][-1]
        assert (health["status"], health["reasonCodes"], health["running"]) == (
            "unhealthy",
            [*codes(NOWHERE_TO_GO), "NOT_YET_APPLIED"],
            None,
        )
        assert rig.cloud.reconcile_reports()[-2:] == [
            ("dsr_1", "failed", codes(NOWHERE_TO_GO)),
            ("dsr_2", "blocked", ["DENY_MOVING"]),
        ]
        rig.vehicle.state = PARKED  # B applied at last: health is B's own
        assert (await rig.reconcile()).kind == "converged"
        assert rig.journal.state.halted is None
        assert health_of(rig.journal.state, rig.runtime.status()) == (HealthStatus.HEALTHY, [])

    run(scenario)


def test_health_says_why_nothing_runs_while_a_newer_revision_waits() -> None:
    """A, the only release that ran, crash-looped under dsr_1 with nothing to roll back to,
    while dsr_2 (B) waits on a gate: the failure is reported under dsr_1, and health says
    unhealthy with its codes (nothing runs), not merely B's degraded NOT_YET_APPLIED; the
    journal replayed says the same."""
    failure, halted = NOWHERE_TO_GO, a_halted_while_b_waits()
    state = folded(*halted)
    assert state.running is None and state.reported["dsr_1"] == Outcome(
        revision="dsr_1", sequence=None, status=ReconcileStatus.FAILED, codes=failure
    )
    assert health_of(state, STOPPED) == (
        HealthStatus.UNHEALTHY,
        [*failure, ReasonCode.NOT_YET_APPLIED],
    )
    # B applied at last: the halt is over, health is B's own.
    after = folded(*halted, *applied(B.key, "dsr_2", 2))
    assert after.halted is None


def test_a_newer_revision_ends_the_halt_when_it_runs_nothing_and_any_restate() -> None:
    """`halted` and `restate` are about the revision in force: a "run nothing" revision is
    met by nothing running (health is its own again), and a newer revision's first
    verdict is sent anyway (restating the old one would be noise). The journal as the
    failed rollback left it, before the pass queued its reports."""
    events = a_halted_while_b_waits()
    stopped = max(i for i, e in enumerate(events) if isinstance(e, ev.RuntimeStopped))
    halted = events[: stopped + 1]
    state = folded(*halted)
    assert state.halted == NOWHERE_TO_GO and state.restate == "dsr_2"
    nothing = msgspec.structs.replace(desired_of(B, 3), release=None)
    after = folded(*halted, nothing)
    assert (after.halted, after.restate) == (None, None)
    assert health_of(after, STOPPED) == (HealthStatus.HEALTHY, [])
    assert folded(*halted, desired_of(C, 4)).restate is None
