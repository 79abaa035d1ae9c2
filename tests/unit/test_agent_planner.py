"""The pure planner: properties over generated vehicles, and the cases that matter most."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from muto.agent.journal.events import DesiredVerified
from muto.agent.journal.state import Failure, InFlight, JournalState, Outcome, RollbackDue
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import plan
from muto.agent.reconcile.steps import (
    Apply,
    AwaitReadiness,
    FetchArtifacts,
    NoteCrashLoop,
    NoteGates,
    QueueReport,
    Rollback,
)
from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.domain.desired import ApplyWindow, Policy
from muto.domain.gates import evaluate_gates
from muto.domain.reasons import ReasonCode
from muto.domain.release import Compatibility, StackRelease
from muto.domain.reports import ReconcileStatus
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import T0, A, B, C, desired_of, journal_of

POOL = [A, B, C]
KEYS = [r.key for r in POOL]
PARKED = VehicleState(free_disk_mb=100_000)


def running(key: str) -> RuntimeStatus:
    return RuntimeStatus(release=key, alive=True, restart_count=0, crash_looping=False)


def observed(
    state: JournalState, status: RuntimeStatus, vehicle: VehicleState = PARKED
) -> Observed:
    digests = frozenset(a.digest for r in POOL for a in r.artifacts)
    return Observed(journal=state, runtime=status, vehicle=vehicle, cached=digests)


# -- generated vehicles --------------------------------------------------------------------

windows = st.one_of(
    st.none(),
    st.builds(
        ApplyWindow,
        start_local=st.sampled_from(["00:00", "02:00", "22:00"]),
        end_local=st.sampled_from(["00:00", "05:00", "04:00"]),
    ),
)
policies = st.builds(
    Policy,
    apply_window=windows,
    require_vehicle_stationary=st.booleans(),
    deny_if_autonomous_mode=st.booleans(),
    require_battery_pct_min=st.sampled_from([0.0, 35.0, 80.0]),
)
vehicles = st.builds(
    VehicleState,
    speed_mps=st.sampled_from([0.0, 0.05, 3.0]),
    autonomous_mode=st.booleans(),
    battery_pct=st.sampled_from([5.0, 50.0, 100.0]),
    timezone=st.sampled_from(["UTC", "Europe/Berlin", "No/Such_Zone"]),
    free_disk_mb=st.sampled_from([10.0, 100_000.0]),
    clock_trusted=st.booleans(),
)
keys = st.sampled_from(KEYS)
statuses = st.one_of(
    st.just(STOPPED),
    st.builds(
        RuntimeStatus,
        release=keys,
        alive=st.booleans(),
        restart_count=st.integers(0, 5),
        crash_looping=st.booleans(),
    ),
)
codes = st.lists(st.sampled_from(list(ReasonCode)), max_size=2)
outcomes = st.builds(
    Outcome,
    revision=st.sampled_from([None, "dsr_1", "dsr_2"]),
    sequence=st.none(),
    status=st.sampled_from(list(ReconcileStatus)),
    codes=codes,
)


failures = st.dictionaries(
    keys,
    st.builds(
        Failure,
        revision=st.sampled_from([None, "dsr_1", "dsr_2"]),
        sequence=st.integers(1, 3),
        status=st.sampled_from([ReconcileStatus.FAILED, ReconcileStatus.ROLLED_BACK]),
        codes=codes,
    ),
    max_size=2,
)
earlier_good = st.lists(keys, unique=True, max_size=2)
flights = st.none() | st.builds(
    InFlight, step=st.just("readiness"), release_key=keys, revision=st.none(), sequence=st.just(2)
)


@st.composite
def journals(draw: st.DrawFn, desired: DesiredVerified | None) -> JournalState:
    state = journal_of(desired, draw(st.none() | keys))
    state.known_good = [*draw(earlier_good), *state.known_good]
    state.failed = draw(failures)
    state.gates = draw(st.none() | codes)
    state.gates_sequence = draw(st.none() | st.integers(1, 3))
    state.unreported = draw(st.none() | outcomes)
    state.in_flight = draw(flights)
    return state


@st.composite
def vehicles_and_desires(
    draw: st.DrawFn,
) -> tuple[DesiredVerified, JournalState, Observed, datetime]:
    desired = desired_of(draw(st.sampled_from(POOL)), draw(st.integers(1, 3)), draw(policies))
    state = draw(journals(desired))
    now = T0 + timedelta(minutes=draw(st.integers(0, 24 * 60)))
    return desired, state, observed(state, draw(statuses), draw(vehicles)), now


@given(vehicles_and_desires())
@settings(max_examples=200, deadline=None)
def test_no_plan_applies_a_new_release_while_any_gate_blocks(
    case: tuple[DesiredVerified, JournalState, Observed, datetime],
) -> None:
    desired, state, seen, now = case
    policy = desired.document.policy
    gates = evaluate_gates(policy, seen.vehicle, now, desired.release.resource_profile.disk_mb_min)
    decided = plan(desired, seen, now)
    applies = [s for s in decided.steps if isinstance(s, Apply)]
    if gates:
        assert all(a.restore and a.release_key == state.running_key for a in applies)
    assert len(applies) <= 1 and all(a is decided.steps[-1] for a in applies)


@given(vehicles_and_desires())
@settings(max_examples=150, deadline=None)
def test_a_failure_in_flight_is_rolled_back_before_anything_else(
    case: tuple[DesiredVerified, JournalState, Observed, datetime],
) -> None:
    desired, state, seen, now = case
    state.in_flight = None
    state.rollback_due = RollbackDue(
        failed_key=desired.release.key, causes=[ReasonCode.APPLY_FAILED], revision=None, sequence=2
    )
    decided = plan(desired, seen, now)
    work = [s for s in decided.steps if not isinstance(s, QueueReport)]
    assert len(work) == 1 and isinstance(work[0], Rollback)
    assert work[0].target_key != desired.release.key


@given(vehicles_and_desires())
@settings(max_examples=150, deadline=None)
def test_a_release_that_failed_here_is_not_applied_again_for_the_same_sequence(
    case: tuple[DesiredVerified, JournalState, Observed, datetime],
) -> None:
    desired, state, seen, now = case
    state.failed[desired.release.key] = Failure(
        revision="dsr_0", sequence=desired.sequence, status=ReconcileStatus.ROLLED_BACK, codes=[]
    )
    decided = plan(desired, seen, now)
    assert (
        not [
            s
            for s in decided.steps
            if isinstance(s, Apply) and s.release_key == desired.release.key
        ]
        or state.running_key == desired.release.key
    )


@given(st.sampled_from(POOL), st.integers(1, 5), policies, vehicles)
@settings(max_examples=100, deadline=None)
def test_the_plan_on_a_converged_vehicle_is_empty(
    target: StackRelease, sequence: int, policy: Policy, vehicle: VehicleState
) -> None:
    desired = desired_of(target, sequence, policy)
    state = journal_of(desired, target.key)
    state.reported = {desired.revision: converged(desired)}
    decided = plan(desired, observed(state, running(target.key), vehicle), T0)
    assert decided.steps == ()
    assert decided.verdict is not None and decided.verdict.kind == "converged"


def converged(desired: DesiredVerified) -> Outcome:
    return Outcome(
        revision=desired.revision, sequence=None, status=ReconcileStatus.CONVERGED, codes=[]
    )


# -- the cases, one by one -----------------------------------------------------------------


def test_a_new_release_is_applied_when_the_gates_are_open() -> None:
    desired = desired_of(POOL[1])
    state = journal_of(desired, POOL[0].key)
    decided = plan(desired, observed(state, running(POOL[0].key)), T0)
    assert [type(s) for s in decided.steps] == [NoteGates, Apply]
    apply = decided.steps[-1]
    assert isinstance(apply, Apply) and apply.replacing == POOL[0].key and not apply.restore


def test_blocked_reports_every_code_and_still_downloads() -> None:
    desired = desired_of(POOL[1], policy=Policy(require_battery_pct_min=50))
    state = journal_of(desired, POOL[0].key)
    moving = VehicleState(speed_mps=3, battery_pct=10, free_disk_mb=100_000)
    seen = observed(state, running(POOL[0].key), moving)
    seen = Observed(seen.journal, seen.runtime, seen.vehicle, cached=frozenset())
    decided = plan(desired, seen, T0)
    assert [type(s) for s in decided.steps] == [NoteGates, FetchArtifacts, QueueReport]
    assert decided.verdict is not None and decided.verdict.kind == "blocked"
    assert list(decided.verdict.codes) == [ReasonCode.DENY_MOVING, ReasonCode.DENY_LOW_BATTERY]


def test_an_unchanged_blocked_verdict_is_neither_journaled_nor_reported_again() -> None:
    desired = desired_of(POOL[1])
    state = journal_of(desired, POOL[0].key, gates=[ReasonCode.DENY_MOVING], gates_sequence=2)
    state.reported = {
        "dsr_2": Outcome(
            revision="dsr_2",
            sequence=None,
            status=ReconcileStatus.BLOCKED,
            codes=[ReasonCode.DENY_MOVING],
        )
    }
    moving = VehicleState(speed_mps=3, free_disk_mb=100_000)
    decided = plan(desired, observed(state, running(POOL[0].key), moving), T0)
    assert decided.steps == ()


def test_drift_restores_the_running_release_even_while_blocked() -> None:
    desired = desired_of(POOL[1])
    state = journal_of(desired, POOL[0].key)
    moving = VehicleState(speed_mps=3, free_disk_mb=100_000)
    decided = plan(desired, observed(state, STOPPED, moving), T0)
    assert len(decided.steps) == 1
    restore = decided.steps[0]
    assert isinstance(restore, Apply) and restore.restore and restore.release_key == POOL[0].key


def test_a_crash_looping_running_release_is_marked_failed() -> None:
    state = journal_of(None, POOL[0].key)
    looping = RuntimeStatus(release=POOL[0].key, alive=True, restart_count=9, crash_looping=True)
    assert plan(None, observed(state, looping), T0).steps == (
        NoteCrashLoop(release_key=POOL[0].key, revision=None, sequence=None),
    )


def test_without_a_previous_known_good_the_rollback_has_no_target() -> None:
    state = journal_of(desired_of(POOL[1]))
    state.rollback_due = RollbackDue(
        failed_key=POOL[1].key, causes=[ReasonCode.APPLY_FAILED], revision="dsr_2", sequence=2
    )
    state.known_good = []
    (step,) = plan(state.desired, observed(state, STOPPED), T0).steps
    assert isinstance(step, Rollback) and step.target_key is None


def test_readiness_is_awaited_after_an_apply() -> None:
    state = journal_of(desired_of(POOL[1]), POOL[0].key)
    state.in_flight = InFlight(
        step="readiness", release_key=POOL[1].key, revision="dsr_2", sequence=2
    )
    steps = plan(state.desired, observed(state, running(POOL[1].key)), T0).steps
    assert steps == (AwaitReadiness(release_key=POOL[1].key),)


def test_a_newer_sequence_for_a_failed_release_asks_for_it_explicitly() -> None:
    desired = desired_of(POOL[1], sequence=3)
    state = journal_of(desired, POOL[0].key)
    state.failed[POOL[1].key] = Failure(
        revision="dsr_2", sequence=2, status=ReconcileStatus.ROLLED_BACK, codes=[]
    )
    step = plan(desired, observed(state, running(POOL[0].key)), T0).steps[-1]
    assert isinstance(step, Apply)
    assert (step.release_key, step.sequence) == (POOL[1].key, 3)


def test_the_same_sequence_for_a_failed_release_under_another_revision_blocks() -> None:
    desired = desired_of(POOL[1], sequence=2)
    state = journal_of(desired, POOL[0].key)
    state.failed[POOL[1].key] = Failure(
        revision="dsr_other", sequence=2, status=ReconcileStatus.FAILED, codes=[]
    )
    decided = plan(desired, observed(state, running(POOL[0].key)), T0)
    assert decided.verdict is not None
    assert list(decided.verdict.codes) == [ReasonCode.RELEASE_PREVIOUSLY_FAILED]
    assert isinstance(decided.steps[-1], QueueReport)


def test_an_expired_desired_state_is_rejected_and_the_running_release_kept() -> None:
    desired = desired_of(POOL[1], ttl_h=1)
    state = journal_of(desired, POOL[0].key)
    later = T0 + timedelta(hours=2)
    decided = plan(desired, observed(state, running(POOL[0].key)), later)
    assert decided.verdict is not None and decided.verdict.kind == "rejected"
    assert not [s for s in decided.steps if isinstance(s, Apply)]


def test_an_incompatible_release_is_rejected_with_every_code() -> None:
    platform = Compatibility(os=["ubuntu-22.04"], ros_distro=["humble"])
    target = msgspec.structs.replace(POOL[1], compatibility=platform)
    desired = desired_of(target)
    state = journal_of(desired, POOL[0].key)
    vehicle = VehicleState(os="ubuntu-20.04", ros_distro="foxy", free_disk_mb=1e6)
    decided = plan(desired, observed(state, running(POOL[0].key), vehicle), T0)
    assert decided.verdict is not None and list(decided.verdict.codes) == [
        ReasonCode.INCOMPATIBLE_OS,
        ReasonCode.INCOMPATIBLE_ROS,
    ]


def test_plan_is_deterministic() -> None:
    desired = desired_of(POOL[2])
    state = journal_of(desired, POOL[0].key)
    seen = observed(state, running(POOL[0].key))
    assert plan(desired, seen, datetime(2026, 1, 1, tzinfo=UTC)) == plan(
        desired, seen, datetime(2026, 1, 1, tzinfo=UTC)
    )


def test_a_release_at_hand_that_could_not_be_unpacked_for_want_of_disk_is_blocked() -> None:
    """A blocked apply (the runtime found the disk full preparing it, what ran kept) marks
    its artifacts for the pass: blocked INSUFFICIENT_DISK, not applied again in it."""
    desired = desired_of(POOL[1])
    state = journal_of(desired, POOL[0].key)
    seen = observed(state, running(POOL[0].key))
    full = {a.digest: ReasonCode.INSUFFICIENT_DISK for a in POOL[1].artifacts}
    seen = Observed(seen.journal, seen.runtime, seen.vehicle, seen.cached, download_failures=full)
    decided = plan(desired, seen, T0)
    assert not any(isinstance(s, Apply) for s in decided.steps)
    assert decided.verdict is not None
    assert (decided.verdict.kind, decided.verdict.codes) == (
        "blocked",
        (ReasonCode.INSUFFICIENT_DISK,),
    )
