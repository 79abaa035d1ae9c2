"""The pure decisions behind the drift check, on plain data: a stack down for good is
restored, one restarting under the runtime's own supervision is left to the crash-loop
rule, and a restore whose artifacts cannot be had ends in a rollback to a known good at
hand (or a reported ARTIFACT_DOWNLOAD_FAILED), never in another try within the pass."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from muto.agent.journal.events import DesiredVerified
from muto.agent.journal.state import JournalState, Outcome, RollbackDue
from muto.agent.reconcile.liveness import Liveness
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import drifted, plan, restore_lost
from muto.agent.reconcile.steps import (
    Apply,
    FetchArtifacts,
    NoteCrashLoop,
    NoteRestoreFailed,
    QueueReport,
    Rollback,
)
from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.domain.desired import Policy
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import T0, A, B, C, desired_of, journal_of

LOST = ReasonCode.ARTIFACT_DOWNLOAD_FAILED
PARKED = VehicleState(free_disk_mb=100_000)
MOVING = VehicleState(speed_mps=3.0, free_disk_mb=100_000)
EVERY = frozenset(a.digest for r in (A, B, C) for a in r.artifacts)


def status(key: str | None, alive: bool = True, **more: object) -> RuntimeStatus:
    fields: dict[str, object] = {"restart_count": 0, "crash_looping": False, **more}
    return RuntimeStatus(release=key, alive=alive, **fields)  # type: ignore[arg-type]


def seen(
    state: JournalState,
    runtime: RuntimeStatus,
    *,
    vehicle: VehicleState = PARKED,
    cached: frozenset[str] = EVERY,
    failed: tuple[str, ...] = (),
    down: bool = False,
    code: ReasonCode = LOST,
) -> Observed:
    return Observed(
        journal=state,
        runtime=runtime,
        vehicle=vehicle,
        cached=cached,
        download_failures={d: code for d in failed},
        stack_down=down,
    )


def digest(release: object) -> str:
    return release.artifacts[0].digest  # type: ignore[attr-defined,no-any-return]


def reported(desired: DesiredVerified, status: ReconcileStatus) -> JournalState:
    state = journal_of(desired, desired.release.key if desired.release else None)
    outcome = Outcome(revision=desired.revision, sequence=None, status=status, codes=[])
    state.reported = {desired.revision: outcome}
    return state


# -- a stack down for good (#6) ------------------------------------------------------------


def test_a_running_release_reported_down_is_restored_even_while_the_gates_block() -> None:
    desired = desired_of(A, 1)
    state = reported(desired, ReconcileStatus.CONVERGED)
    gone = status(A.key, alive=False)  # a container removed outside muto
    decided = plan(desired, seen(state, gone, vehicle=MOVING, down=True), T0)
    assert decided.verdict is None
    (restore,) = decided.steps
    assert isinstance(restore, Apply) and restore.restore and restore.release_key == A.key
    assert drifted(state, gone, stack_down=True)


def test_a_release_restarting_under_supervision_is_left_to_the_crash_loop_rule() -> None:
    desired = desired_of(A, 1)
    state = reported(desired, ReconcileStatus.CONVERGED)
    between = status(A.key, alive=False, restarting=True, restart_count=1)
    decided = plan(desired, seen(state, between), T0)
    assert decided.steps == () and decided.verdict is not None
    assert decided.verdict.kind == "converged"
    assert not drifted(state, between, stack_down=False)


def test_a_crash_loop_comes_before_a_restore() -> None:
    state = journal_of(desired_of(A, 1), A.key)
    looping = status(A.key, alive=False, restart_count=7, crash_looping=True)
    assert plan(state.desired, seen(state, looping, down=True), T0).steps == (
        NoteCrashLoop(release_key=A.key, revision="dsr_1", sequence=1),
    )


def test_a_desired_release_that_can_be_applied_now_replaces_a_stack_down() -> None:
    desired = desired_of(B, 2)
    state = journal_of(desired, A.key)
    decided = plan(desired, seen(state, status(A.key, alive=False), down=True), T0)
    apply = decided.steps[-1]
    assert isinstance(apply, Apply) and apply.release_key == B.key and not apply.restore


# -- liveness: when "not alive" means down -------------------------------------------------


def test_down_takes_a_while_without_a_restart_and_never_while_restarting() -> None:
    watch = Liveness(after_s=5.0)
    gone = status(A.key, alive=False, restart_count=2)
    assert not watch.down(gone, 100.0)
    assert not watch.down(gone, 104.9)
    assert watch.down(gone, 105.0)
    assert not watch.down(status(A.key, alive=False, restart_count=3), 106.0)  # restarted
    assert not watch.down(status(A.key, alive=False, restart_count=3), 110.9)
    assert watch.down(status(A.key, alive=False, restart_count=3), 111.0)
    assert not watch.down(status(A.key), 112.0)  # alive again: starts over
    assert not watch.down(gone, 113.0)
    restarting = status(A.key, alive=False, restarting=True)
    assert not any(watch.down(restarting, t) for t in (120.0, 200.0, 10_000.0))
    assert not watch.down(STOPPED, 20_000.0)


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.integers(0, 3), st.floats(0, 3)),
        max_size=30,
    )
)
def test_a_stack_is_down_only_after_a_quiet_stretch_with_nobody_restarting_it(
    seen_statuses: list[tuple[bool, bool, int, float]],
) -> None:
    watch, now, quiet_since = Liveness(after_s=5.0), 0.0, None
    last: tuple[int, bool] | None = None
    for alive, restarting, restarts, step in seen_statuses:
        now += step
        up = alive or restarting
        if up or last is None or last[0] != restarts or last[1]:
            quiet_since = None if up else now
        last = (restarts, up)
        down = watch.down(status(A.key, alive, restarting=restarting, restart_count=restarts), now)
        assert down == (quiet_since is not None and now - quiet_since >= 5.0)
        assert not (down and up)


# -- a restore whose artifacts cannot be had (#4) ------------------------------------------


def offline_restart(known_good: list[str]) -> JournalState:
    """A converged on A under dsr_1 (B before it), restarted: nothing runs yet."""
    desired = desired_of(A, 1)
    state = reported(desired, ReconcileStatus.CONVERGED)
    state.known_good = [*known_good, A.key]
    return state


def test_a_lost_restore_falls_back_to_the_known_good_at_hand() -> None:
    state = offline_restart([B.key])
    decided = plan(state.desired, seen(state, STOPPED, failed=(digest(A),)), T0)
    assert decided.steps == (
        NoteRestoreFailed(release_key=A.key, code=LOST, revision="dsr_1", sequence=1),
    )
    # ...the fold then owes the rollback (ApplyFailed), and the planner does it.
    state.rollback_due = RollbackDue(failed_key=A.key, causes=[LOST], revision="dsr_1", sequence=1)
    state.known_good = [B.key]
    (step,) = plan(state.desired, seen(state, STOPPED, failed=(digest(A),)), T0).steps
    assert step == Rollback(failed_key=A.key, target_key=B.key, causes=[LOST])


def test_a_lost_restore_without_a_known_good_at_hand_ends_the_pass_reported() -> None:
    for known, cached in (([], EVERY), ([B.key], EVERY - {digest(B)})):
        state = offline_restart(known)
        decided = plan(state.desired, seen(state, STOPPED, cached=cached, failed=(digest(A),)), T0)
        assert decided.verdict is not None
        assert (decided.verdict.kind, decided.verdict.codes) == ("failed", (LOST,))
        (report,) = decided.steps
        assert isinstance(report, QueueReport)
        assert (report.outcome.status, report.outcome.codes) == (ReconcileStatus.FAILED, [LOST])


def test_a_restore_refused_for_want_of_disk_is_blocked_like_any_download() -> None:
    state = offline_restart([])
    full = seen(state, STOPPED, failed=(digest(A),), code=ReasonCode.INSUFFICIENT_DISK)
    decided = plan(state.desired, full, T0)
    assert decided.verdict is not None
    assert (decided.verdict.kind, decided.verdict.codes) == (
        "blocked",
        (ReasonCode.INSUFFICIENT_DISK,),
    )
    state = offline_restart([B.key])
    full = seen(state, STOPPED, failed=(digest(A),), code=ReasonCode.INSUFFICIENT_DISK)
    assert plan(state.desired, full, T0).steps == (
        NoteRestoreFailed(
            release_key=A.key, code=ReasonCode.INSUFFICIENT_DISK, revision="dsr_1", sequence=1
        ),
    )


def test_a_lost_restore_lets_the_desired_release_download_meanwhile() -> None:
    desired = desired_of(C, 3)
    state = journal_of(desired, A.key)
    state.known_good = [A.key]
    observed = seen(state, STOPPED, cached=EVERY - {digest(A), digest(C)}, failed=(digest(A),))
    decided = plan(desired, observed, T0)
    assert decided.verdict is None and isinstance(decided.steps[-1], FetchArtifacts)
    assert restore_lost(observed)


desires = st.sampled_from([A, B, C]).flatmap(
    lambda r: st.builds(desired_of, st.just(r), st.integers(1, 3), st.just(Policy()))
)


@given(
    desires,
    st.sampled_from([A, B, C]),
    st.lists(st.sampled_from([A.key, B.key, C.key]), unique=True, max_size=2),
    st.sampled_from([STOPPED, status(B.key), status(A.key, alive=False)]),
    st.booleans(),
    st.frozensets(st.sampled_from(sorted(EVERY))),
    st.sampled_from([PARKED, MOVING]),
    st.integers(0, 48),
)
@settings(max_examples=300, deadline=None)
def test_a_release_whose_artifacts_failed_this_pass_is_never_restored_again_in_it(
    desired: DesiredVerified,
    running: object,
    earlier: list[str],
    runtime: RuntimeStatus,
    down: bool,
    cached: frozenset[str],
    vehicle: VehicleState,
    hours: int,
) -> None:
    key = running.key  # type: ignore[attr-defined]
    state = journal_of(desired, key)
    state.known_good = [*(k for k in earlier if k != key), key]
    observed = seen(
        state, runtime, vehicle=vehicle, cached=cached, failed=(digest(running),), down=down
    )
    decided = plan(desired, observed, T0 + timedelta(hours=hours))
    restores = [s for s in decided.steps if isinstance(s, Apply) and s.release_key == key]
    assert not restores
    if restore_lost(observed):  # it ends the pass, rolls back, or downloads the desired one
        work = [s for s in decided.steps if not isinstance(s, QueueReport)]
        assert (
            decided.verdict is not None
            or work
            == [
                NoteRestoreFailed(
                    release_key=key, code=LOST, revision=desired.revision, sequence=desired.sequence
                )
            ]
            or isinstance(work[-1], (FetchArtifacts, Apply))
        )


@given(
    desires,
    st.sampled_from([A.key, B.key, C.key]),
    st.booleans(),
    st.integers(0, 9),
    st.booleans(),
    st.sampled_from([PARKED, MOVING]),
)
@settings(max_examples=300, deadline=None)
def test_a_stack_that_runs_or_restarts_is_never_restored_and_one_down_always_is(
    desired: DesiredVerified,
    key: str,
    restarting: bool,
    restarts: int,
    down: bool,
    vehicle: VehicleState,
) -> None:
    state = journal_of(desired, key)
    runtime = status(key, alive=not down and not restarting, restarting=restarting)
    runtime = RuntimeStatus(**{**_fields(runtime), "restart_count": restarts})
    decided = plan(desired, seen(state, runtime, vehicle=vehicle, down=down), T0)
    applies = [s for s in decided.steps if isinstance(s, Apply)]
    if not down:  # alive, or between restarts the runtime makes itself
        assert not [a for a in applies if a.restore]
    else:  # restored at once (or replaced by the desired release, gates permitting)
        assert applies and applies[-1] is decided.steps[-1] and decided.verdict is None
        assert applies[-1].restore == (applies[-1].release_key == key)


def _fields(runtime: RuntimeStatus) -> dict[str, object]:
    return {name: getattr(runtime, name) for name in RuntimeStatus.__slots__}


def test_drift_is_what_the_planner_acts_on() -> None:
    state = journal_of(desired_of(A, 1), A.key)
    assert not drifted(state, status(A.key), stack_down=False)
    assert drifted(state, status(A.key, crash_looping=True), stack_down=False)
    assert drifted(state, STOPPED, stack_down=False)
    assert drifted(state, status(B.key), stack_down=False)
    nothing = journal_of(None)
    assert drifted(nothing, status(B.key), stack_down=False)
    assert not drifted(nothing, STOPPED, stack_down=False)
