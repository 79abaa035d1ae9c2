"""A running release whose ROS graph stays degraded (a node gone, a required topic silent)
for longer than its grace (its healthModel.readinessTimeoutSec, at least 5 s) has failed:
journaled (GraphDegraded), under the revision it runs under, rolled back to the previous
known good and reported `rolled_back` ROS_GRAPH_DEGRADED, ROLLBACK_APPLIED. A shorter
degradation, or one broken by a whole graph, is reported as health only. The timer
ticks at every status read, the drift check during a pass included. The same with a
real ros_nodes stack: tests/e2e/test_agent_ros.py."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from muto.agent.clock import SystemClock
from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.journal.state import InFlight, JournalState, Running
from muto.agent.reconcile.liveness import Degradation
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import degraded_grace_s, drifted, plan
from muto.agent.reconcile.steps import NoteCrashLoop, NoteGraphDegraded, QueueReport, Rollback
from muto.agent.runtime.base import RuntimeStatus
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import (
    T0,
    A,
    B,
    C,
    FakeCloud,
    Rig,
    converged_on,
    desired_of,
    journal_of,
    make_rig,
    release,
    run,
    started,
)
from tests.support.waits import until

GRAPH = ReasonCode.ROS_GRAPH_DEGRADED
MISSING = "topic /demo/chatter: 0.0 Hz over the last 1s (needs 5 Hz)"
PARKED = VehicleState(free_disk_mb=100_000)
MOVING = VehicleState(speed_mps=3.0, free_disk_mb=100_000)
EVERY = frozenset(a.digest for r in (A, B, C) for a in r.artifacts)
# A release given 20 s to become ready: its graph gets 20 s to become whole again.
SLOW = release("4.0.0", readiness_timeout_sec=20)


def status(key: str | None, degraded: str | None = MISSING, **more: Any) -> RuntimeStatus:
    fields: dict[str, Any] = {"alive": True, "restart_count": 0, "crash_looping": False, **more}
    return RuntimeStatus(release=key, degraded=degraded, **fields)


def seen(
    state: JournalState, runtime: RuntimeStatus, degraded_s: float | None, **more: Any
) -> Observed:
    return Observed(
        journal=state,
        runtime=runtime,
        vehicle=more.pop("vehicle", PARKED),
        cached=EVERY,
        degraded_s=degraded_s,
        **more,
    )


def runs_under(state: JournalState, revision: str, sequence: int) -> JournalState:
    assert state.running is not None
    state.running = Running(
        key=state.running.key, since=T0, position=1, revision=revision, sequence=sequence,
        cause="converged",
    )  # fmt: skip
    return state


# -- the planner ---------------------------------------------------------------------------


def test_the_grace_is_the_readiness_timeout_and_never_under_one_drift_check() -> None:
    assert degraded_grace_s(SLOW) == 20
    assert degraded_grace_s(release("9.0.0", readiness_timeout_sec=1)) == 5
    assert degraded_grace_s(release("9.0.1", readiness_timeout_sec=180)) == 180


def test_a_graph_degraded_past_its_grace_fails_the_release_under_its_revision() -> None:
    desired = desired_of(A, 2)
    state = runs_under(journal_of(desired, A.key), "dsr_2", 2)
    within = plan(desired, seen(state, status(A.key), 5.0), T0)
    assert not [s for s in within.steps if isinstance(s, NoteGraphDegraded)]
    assert not drifted(state, status(A.key), False, 5.0)
    decided = plan(desired, seen(state, status(A.key), 5.5), T0)
    assert decided.steps == (
        NoteGraphDegraded(
            release_key=A.key, revision="dsr_2", sequence=2, detail=MISSING, degraded_sec=5.5
        ),
    )
    assert decided.verdict is None  # the rollback comes next
    assert drifted(state, status(A.key), False, 5.5)


def test_a_degraded_graph_while_a_newer_revision_waits_is_judged_under_the_running_one() -> None:
    desired = desired_of(B, 3)  # gated: the vehicle is moving
    state = runs_under(journal_of(desired, A.key), "dsr_1", 1)
    decided = plan(desired, seen(state, status(A.key), 60.0, vehicle=MOVING), T0)
    (step,) = decided.steps
    assert isinstance(step, NoteGraphDegraded)
    assert (step.release_key, step.revision, step.sequence) == (A.key, "dsr_1", 1)


def test_a_crash_loop_comes_first_and_a_whole_graph_is_never_a_failure() -> None:
    state = runs_under(journal_of(desired_of(A, 1), A.key), "dsr_1", 1)
    looping = status(A.key, restart_count=5, crash_looping=True)
    assert plan(state.desired, seen(state, looping, 99.0), T0).steps == (
        NoteCrashLoop(release_key=A.key, revision="dsr_1", sequence=1),
    )
    whole = status(A.key, degraded=None)
    assert not drifted(state, whole, False, 99.0)
    assert not [
        s for s in plan(state.desired, seen(state, whole, 99.0), T0).steps
        if isinstance(s, NoteGraphDegraded)
    ]  # fmt: skip


@st.composite
def degraded_vehicles(draw: st.DrawFn) -> tuple[Any, JournalState, Observed]:
    target = draw(st.sampled_from([A, B, C, SLOW]))
    desired = draw(st.none() | st.builds(desired_of, st.just(target), st.integers(1, 3)))
    state = journal_of(desired, draw(st.none() | st.sampled_from([A.key, B.key, SLOW.key])))
    state.releases[SLOW.key] = SLOW
    if state.running is not None and draw(st.booleans()):
        runs_under(state, draw(st.sampled_from(["dsr_1", "dsr_2"])), draw(st.integers(1, 3)))
    if draw(st.booleans()):
        key = draw(st.sampled_from([A.key, B.key]))
        state.in_flight = InFlight(step="readiness", release_key=key, revision=None, sequence=2)
    runtime = status(
        draw(st.none() | st.sampled_from([A.key, B.key, C.key, SLOW.key])),
        degraded=draw(st.none() | st.just(MISSING)),
        alive=draw(st.booleans()),
        crash_looping=draw(st.booleans()),
    )
    degraded_s = draw(st.none() | st.floats(0, 100))
    vehicle = draw(st.sampled_from([PARKED, MOVING]))
    return desired, state, seen(state, runtime, degraded_s, vehicle=vehicle)


@given(degraded_vehicles())
@settings(max_examples=300, deadline=None)
def test_only_a_degradation_past_its_grace_fails_the_running_release(
    case: tuple[Any, JournalState, Observed],
) -> None:
    """Invariant: a running release is failed for its ROS graph exactly when the runtime
    runs it, it does not crash-loop, nothing is in flight or owed a rollback, and the
    graph has been degraded without a break for longer than its grace; it is failed
    under the revision it runs under (planner.under) and nothing else is planned."""
    desired, state, observed = case
    decided = plan(desired, observed, T0)
    noted = [s for s in decided.steps if isinstance(s, NoteGraphDegraded)]
    runtime, running = observed.runtime, state.release(state.running_key)
    expected = (
        running is not None
        and state.in_flight is None
        and state.rollback_due is None
        and runtime.release == running.key
        and not runtime.crash_looping
        and runtime.degraded is not None
        and observed.degraded_s is not None
        and observed.degraded_s > degraded_grace_s(running)
    )
    assert bool(noted) == expected
    if noted:
        assert running is not None
        (step,) = noted
        assert [s for s in decided.steps if not isinstance(s, QueueReport)] == [step]
        assert step.release_key == running.key and decided.verdict is None
        wanted = desired is not None and desired.release.key == running.key
        if not wanted and state.running is not None and state.running.revision:
            assert (step.revision, step.sequence) == (
                state.running.revision, state.running.sequence,
            )  # fmt: skip


# -- the timer -----------------------------------------------------------------------------


def test_the_timer_runs_only_while_every_look_finds_the_same_release_degraded() -> None:
    watch = Degradation()
    assert watch.degraded_for(status(A.key), 100.0) == 0.0
    assert watch.degraded_for(status(A.key, degraded="node /demo/x is not up"), 112.0) == 12.0
    assert watch.degraded_for(status(A.key, degraded=None), 113.0) is None  # whole: over
    assert watch.degraded_for(status(A.key), 114.0) == 0.0
    assert watch.degraded_for(status(B.key), 120.0) == 0.0  # another release: over
    assert watch.degraded_for(status(None, degraded=None), 121.0) is None


# -- the fold ------------------------------------------------------------------------------


def test_the_fold_owes_a_rollback_and_reports_it_with_the_cause() -> None:
    journal = Journal.memory()
    journal.append(desired_of(A, 1))
    journal.append(ev.ApplyStarted(at=T0, release_key=A.key, revision="dsr_1", sequence=1,
                                   replacing=None))  # fmt: skip
    journal.append(ev.ApplySucceeded(at=T0, release_key=A.key, apply_sec=1))
    journal.append(ev.ReadinessPassed(at=T0, release_key=A.key, readiness_sec=1))
    journal.append(desired_of(B, 2))
    journal.append(ev.ApplyStarted(at=T0, release_key=B.key, revision="dsr_2", sequence=2,
                                   replacing=A.key))  # fmt: skip
    journal.append(ev.ApplySucceeded(at=T0, release_key=B.key, apply_sec=1))
    journal.append(ev.ReadinessPassed(at=T0, release_key=B.key, readiness_sec=1))
    journal.append(desired_of(C, 3))  # waits (gates): B still runs under dsr_2
    journal.append(ev.GraphDegraded(at=T0, release_key=B.key, detail=MISSING, degraded_sec=21,
                                    revision="dsr_2", sequence=2))  # fmt: skip
    state = journal.state
    assert state.rollback_due is not None
    assert (state.rollback_due.failed_key, state.rollback_due.causes) == (B.key, [GRAPH])
    assert (state.rollback_due.revision, state.rollback_due.sequence) == ("dsr_2", 2)
    assert B.key not in state.known_good
    (step,) = plan(state.desired, seen(state, status(B.key), 21.0), T0).steps
    assert step == Rollback(failed_key=B.key, target_key=A.key, causes=[GRAPH])
    journal.append(ev.RollbackStarted(at=T0, failed_key=B.key, target_key=A.key, causes=[GRAPH]))
    journal.append(ev.RollbackApplied(at=T0, failed_key=B.key, target_key=A.key, causes=[GRAPH],
                                      readiness_sec=1))  # fmt: skip
    state = journal.state
    assert state.running_key == A.key
    assert state.unreported is not None
    assert (state.unreported.revision, state.unreported.status, state.unreported.codes) == (
        "dsr_2", ReconcileStatus.ROLLED_BACK, [GRAPH, ReasonCode.ROLLBACK_APPLIED],
    )  # fmt: skip


# -- a whole agent on the simulated runtime --------------------------------------------------


class Graph:
    """Makes the rig's simulated runtime report a degraded ROS graph for `key`."""

    def __init__(self, rig: Rig) -> None:
        self.missing: dict[str, str | None] = {}
        plain = rig.runtime.status

        def degraded_status() -> RuntimeStatus:
            found = plain()
            missing = self.missing.get(found.release or "")
            return dataclasses.replace(found, degraded=missing) if missing else found

        rig.runtime.status = degraded_status  # type: ignore[method-assign]


def events(rig: Rig, kind: type[ev.Event], after: int = 0) -> list[Any]:
    return [r.event for r in rig.journal.records(after) if isinstance(r.event, kind)]


def healths(rig: Rig, after: int = 0) -> list[tuple[str, list[str]]]:
    queued = events(rig, ev.ReportQueued, after)
    return [(e.status, [*e.codes]) for e in queued if e.kind == "health"]


def test_a_release_whose_topic_stays_silent_is_rolled_back_after_its_grace() -> None:
    async def scenario() -> None:
        rig = await started()
        graph = Graph(rig)
        await converged_on(rig, A, 1)
        await converged_on(rig, SLOW, 2)
        before = rig.journal.state.position
        graph.missing[SLOW.key] = MISSING  # the talker went quiet after readiness
        assert not rig.agent.drifted()
        rig.agent.report_health()
        assert healths(rig, before) == [("unhealthy", ["ROS_GRAPH_DEGRADED"])]
        for _ in range(4):  # 20 s of drift checks: within the grace, reported only
            rig.clock.advance(5)
            assert not rig.agent.drifted()
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == SLOW.key
        assert not events(rig, ev.GraphDegraded, before)
        rig.clock.advance(5)  # 25 s without a break: past its 20 s
        assert rig.agent.drifted()
        verdict = await rig.reconcile()
        assert (verdict.kind, [str(c) for c in verdict.codes]) == (
            "settled", ["ROS_GRAPH_DEGRADED", "ROLLBACK_APPLIED"],
        )  # fmt: skip
        (failed,) = events(rig, ev.GraphDegraded, before)
        assert (failed.release_key, failed.revision, failed.sequence) == (SLOW.key, "dsr_2", 2)
        assert failed.detail == MISSING and failed.degraded_sec == 25
        (back,) = events(rig, ev.RollbackApplied, before)
        assert (back.failed_key, back.target_key, back.causes) == (SLOW.key, A.key, [GRAPH])
        assert rig.runtime.status().release == A.key == rig.journal.state.running_key
        rig.agent.report_health()
        assert healths(rig, before)[-1] == ("healthy", [])
        assert not rig.agent.drifted()
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2", "rolled_back", ["ROS_GRAPH_DEGRADED", "ROLLBACK_APPLIED"],
        )  # fmt: skip
        position = rig.journal.state.position
        await rig.reconcile()  # the failed release is not applied again for dsr_2
        assert rig.runtime.status().release == A.key
        assert not events(rig, ev.ApplyStarted, position)

    run(scenario)


def test_a_topic_hiccup_is_reported_and_never_rolled_back() -> None:
    async def scenario() -> None:
        rig = await started()
        graph = Graph(rig)
        await converged_on(rig, A, 1)
        await converged_on(rig, SLOW, 2)
        before = rig.journal.state.position
        for _ in range(3):  # 15 s silent, then whole for a check: 45 s in all
            graph.missing[SLOW.key] = MISSING
            for _ in range(4):
                assert not rig.agent.drifted()
                rig.clock.advance(5)
            graph.missing[SLOW.key] = None
            assert not rig.agent.drifted()
            await rig.reconcile()
        assert rig.runtime.status().release == SLOW.key == rig.journal.state.running_key
        assert not events(rig, ev.GraphDegraded, before)
        assert not events(rig, ev.RollbackStarted, before)

    run(scenario)


def test_the_grace_runs_out_while_the_pass_waits_on_a_download() -> None:
    """B (readiness 2 s, so the 5 s floor) loses its topic while the pass for C downloads
    for a minute: the watcher's drift check sees the grace run out, pre-empts the
    download, and the rollback comes at once, not when the download ends."""

    async def scenario() -> None:
        clock = SystemClock()
        now = datetime.now(UTC)
        quick = release("2.0.0", readiness_timeout_sec=2)
        rig = make_rig(
            cloud=FakeCloud(),
            clock=clock,  # type: ignore[arg-type]
            time_scale=1.0,
            poll_s=3600,
            drift_check_s=0.05,
            health_every_s=0.5,
        )
        graph = Graph(rig)

        def desire(target: Any, sequence: int) -> None:
            rig.cloud.serve(rig.signers.bundle(target, sequence, issued=now - timedelta(hours=1)))
            rig.agent.trigger("test")

        def running(key: str) -> bool:
            return rig.journal.state.running_key == key

        await rig.agent.start()
        try:
            desire(A, 1)
            await until(lambda: running(A.key), "A", in_thread=False)
            desire(quick, 2)
            await until(lambda: running(quick.key), "B", in_thread=False)
            rig.artifacts.missing, rig.artifacts.download_sec = {C.artifacts[0].digest}, 60
            desire(C, 3)
            await until(lambda: rig.agent.phase.value == "caching", "caching", in_thread=False)
            before = rig.journal.state.position
            graph.missing[quick.key] = MISSING
            silent = clock.monotonic()
            await until(lambda: running(A.key), "the rollback", timeout=15, in_thread=False)
            assert 5 <= clock.monotonic() - silent < 10
            assert "GraphDegraded" in [type(r.event).__name__ for r in rig.journal.records(before)]
            assert ("unhealthy", ["ROS_GRAPH_DEGRADED"]) in healths(rig, before)
            assert not rig.agent.idle  # all of it while the pass still waits
            assert C.artifacts[0].digest in rig.artifacts.missing  # still downloading
            await asyncio.sleep(0.2)
        finally:
            await rig.agent.stop()
        reports = rig.cloud.reconcile_reports()
        assert ("dsr_2", "rolled_back", ["ROS_GRAPH_DEGRADED", "ROLLBACK_APPLIED"]) in reports
        assert not [r for r in reports if r[0] == "dsr_3" and r[1] == "rolled_back"]

    run(scenario)
