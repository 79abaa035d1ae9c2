"""Pure rollout rules: canary choice and phase gates, for all inputs."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from muto.domain.events import GateEvaluation
from muto.domain.model.rollout_states import phase_limit
from muto.domain.requests import RolloutThresholds
from muto.domain.rollout_rules import (
    NOT_JUDGED,
    Candidate,
    Given,
    Member,
    MemberStatus,
    Verdict,
    evaluate_phase,
    pick_canaries,
    rollback_target,
    stored_share,
    watch_bake,
)
from muto.domain.wire import to_builtins

candidates = st.lists(
    st.builds(
        Candidate,
        vehicle_id=st.text("abcdef0123", min_size=1, max_size=6),
        region=st.sampled_from(["eu", "us", "ap"]),
        model=st.sampled_from(["v3", "v4"]),
        presence=st.sampled_from(["online", "stale", "offline", None]),
        blocked=st.booleans(),
        runs_release=st.booleans(),
    ),
    unique_by=lambda c: c.vehicle_id,
    max_size=40,
)


@given(candidates, st.randoms())
def test_exactly_one_canary_per_region_model_and_order_does_not_matter(cs, rnd) -> None:
    canaries, wave = pick_canaries(cs)
    groups = {(c.region, c.model) for c in cs}
    by_id = {c.vehicle_id: c for c in cs}
    assert sorted({(by_id[v].region, by_id[v].model) for v in canaries}) == sorted(groups)
    assert len(canaries) == len(groups)
    assert sorted(canaries + wave) == sorted(by_id)
    shuffled = list(cs)
    rnd.shuffle(shuffled)
    assert pick_canaries(shuffled) == (canaries, wave)


RANK = {"online": 0, "stale": 1, "offline": 2, None: 3}


@given(candidates)
def test_canaries_prefer_online_then_not_running_the_release_then_unblocked(cs) -> None:
    """Online before stale before offline before never connected (a canary that cannot
    take the release holds the rollout until its deadline); then one that does not run
    the release already (it would pass the gate having applied nothing); then one not
    blocked by its gate."""
    canaries, _ = pick_canaries(cs)
    by_id = {c.vehicle_id: c for c in cs}
    for vehicle_id in canaries:
        chosen = by_id[vehicle_id]
        group = [c for c in cs if (c.region, c.model) == (chosen.region, chosen.model)]
        best = min((RANK[c.presence], c.runs_release, c.blocked) for c in group)
        assert (RANK[chosen.presence], chosen.runs_release, chosen.blocked) == best


def test_a_never_connected_or_stale_vehicle_is_no_canary_beside_an_online_one() -> None:
    """The review's ghost canary: presence None (never connected) once counted as
    online, and the lowest id won."""
    group = [
        Candidate("a-ghost", "eu", "v3", presence=None),
        Candidate("b-stale", "eu", "v3", presence="stale"),
        Candidate("c-online", "eu", "v3", presence="online"),
    ]
    assert pick_canaries(group) == (["c-online"], ["a-ghost", "b-stale"])
    assert pick_canaries(group[:2]) == (["b-stale"], ["a-ghost"])


def test_a_vehicle_already_running_the_release_is_no_canary_beside_one_that_is_not() -> None:
    group = [
        Candidate("a-runs-it", "eu", "v3", runs_release=True),
        Candidate("b-blocked", "eu", "v3", blocked=True),
        Candidate("c-fresh", "eu", "v3"),
    ]
    assert pick_canaries(group)[0] == ["c-fresh"]
    assert pick_canaries(group[:2])[0] == ["b-blocked"]


releases = st.sampled_from(["app@1.0.0", "app@2.0.0", "app@3.0.0", None])
keys = st.sampled_from(["app@1.0.0", "app@2.0.0"])


@st.composite
def histories(
    draw: st.DrawFn, rollbacks: bool = True
) -> tuple[list[Given], str | None, str | None]:
    """Desired states given, newest first (revision r0 the newest), some of them rollback
    revisions; what the vehicle reports running, and the revision it reported on (one
    of them, an older one, or none)."""
    size = draw(st.integers(0, 5))
    given_ = [
        Given(f"r{i}", draw(releases), draw(st.booleans()) if rollbacks else False)
        for i in range(size)
    ]
    running = draw(st.sampled_from(["app@1.0.0", "app@2.0.0", "app@3.0.0", None]))
    reported_on = draw(st.sampled_from([*(g.revision for g in given_), "older", None]))
    return given_, running, reported_on


def newest_rollback(given_: list[Given]) -> int | None:
    return next((i for i, g in enumerate(given_) if g.rollback), None)


@given(keys, histories())
def test_a_rollback_never_returns_a_member_to_the_rollouts_own_release(key, history) -> None:
    given_, running, reported_on = history
    assert rollback_target(key, given_, running, reported_on) != key


@given(keys, histories(rollbacks=False))
def test_without_a_rollback_revision_the_newest_other_release_is_the_target(key, history) -> None:
    """What it runs, then its desired states, newest first: the first that is not the
    rollout's release, else "run nothing" (None)."""
    given_, running, reported_on = history
    listed = ([running] if running is not None else []) + [g.release for g in given_]
    others = [r for r in listed if r != key]
    assert rollback_target(key, given_, running, reported_on) == (others[0] if others else None)


@given(keys, histories())
def test_what_a_rollback_revision_took_away_is_never_a_target(key, history) -> None:
    """The states given before the newest rollback revision change nothing, and neither
    does a release reported running before it or on it, unless it is that rollback's
    own target: it is its known good."""
    given_, running, reported_on = history
    at = newest_rollback(given_)
    target = rollback_target(key, given_, running, reported_on)
    if at is None:
        return
    newer, rollback = given_[:at], given_[at]
    assert rollback_target(key, given_[: at + 1], running, reported_on) == target
    allowed = {g.release for g in given_[: at + 1]} | {None}
    since = {g.revision for g in newer}
    counts = running == rollback.release or (
        reported_on in since and running in {g.release for g in newer}
    )
    if not counts:  # it still runs what the rollback took away (or older)
        assert rollback_target(key, given_, None, None) == target
    assert target in allowed
    if at == 0:  # a rollback revision now: its target alone
        assert target == (rollback.release if rollback.release != key else None)


def test_a_second_rollout_of_a_release_rolls_back_to_the_one_before_it() -> None:
    """The review's case: app@2.0.0 completed on the vehicle (it runs it, and it is its
    desired state), then a second rollout of app@2.0.0 covered it and rolled back: its
    target is app@1.0.0, the one before, never app@2.0.0 again."""
    two, one = Given("r2", "app@2.0.0"), Given("r1", "app@1.0.0")
    assert rollback_target("app@2.0.0", [two, one], "app@2.0.0", "r2") == "app@1.0.0"
    assert rollback_target("app@2.0.0", [two], "app@2.0.0", "r2") is None


def test_a_rollback_taken_while_away_then_a_direct_assignment() -> None:
    """The review's case: the vehicle ran w; rollout R1 of y failed and rolled it back to
    w while it was away (it still reports y, on R1's revision); then x was assigned to it
    directly. Rollout R2 of z rolls it back to x, never to y (what R1 took away); once it
    reports on x, what it runs counts again."""
    x, back = Given("rx", "x@1"), Given("rb", "w@1", rollback=True)
    assert rollback_target("z@1", [x, back], "y@1", "ry") == "x@1"
    assert rollback_target("x@1", [x, back], "y@1", "ry") == "w@1"
    assert rollback_target("z@1", [x, back], "w@1", "rb") == "w@1"  # it took the rollback
    assert rollback_target("z@1", [x, back], "y@1", "rb") == "x@1"  # it refused it
    assert rollback_target("z@1", [x, back], "x@1", "rx") == "x@1"
    # The rollback revision its desired state now: its target alone.
    assert rollback_target("z@1", [back, Given("ry", "y@1")], "y@1", "ry") == "w@1"
    assert rollback_target("w@1", [back, Given("ry", "y@1")], "y@1", "ry") is None


@given(keys, histories())
def test_a_release_that_failed_on_the_vehicle_is_never_a_target(key, history) -> None:
    """Its last report said the release of the revision it reported on failed there."""
    given_, running, reported_on = history
    broken = next((g.release for g in given_ if g.revision == reported_on), None)
    target = rollback_target(key, given_, running, reported_on, failed=True)
    assert broken is None or target != broken
    assert target != key


def test_a_rollback_never_taken_does_not_make_what_it_took_away_a_target() -> None:
    """The vehicle ran y; rollout R1 of y rolled it back to w while it was away; then
    rollout R2 gave it z before it took that rollback. It failed on z and went back to
    y, its own known good, and says so on R2's revision. R2's rollback returns it to w,
    never to y (R1 took y away; the Vehicle aggregate keeps two desired states, so the
    rule cannot see y given before the rollback); given y again since, y counts."""
    z, back = Given("rz", "z@1"), Given("rb", "w@1", rollback=True)
    assert rollback_target("z@1", [z, back], "y@1", "rz") == "w@1"
    assert rollback_target("z@1", [z, back, Given("ry", "y@1")], "y@1", "rz") == "w@1"
    assert rollback_target("z@1", [Given("ry2", "y@1"), z, back], "y@1", "ry2") == "y@1"
    assert (
        rollback_target("x@1", [Given("rx", "x@1"), Given("ry2", "y@1"), back], "y@1", "ry2")
        == "y@1"
    )
    assert rollback_target("z@1", [z, back], "w@1", "rz") == "w@1"  # took the rollback
    # R3 of q: z is its desired state, but it failed there; w, never y.
    assert rollback_target("q@1", [z, back], "y@1", "rz", failed=True) == "w@1"
    assert rollback_target("q@1", [z, back], "y@1", "rz") == "z@1"  # had z not failed


statuses = st.sampled_from(list(MemberStatus))
codes = st.lists(
    st.sampled_from(
        [
            "CRASH_LOOP_DETECTED",
            "READINESS_TIMEOUT",
            "APPLY_FAILED",
            "DENY_MOVING",
            "DENY_OUTSIDE_WINDOW",
            "ROLLBACK_APPLIED",
        ]
    ),
    max_size=2,
)
members = st.lists(
    st.builds(
        Member, vehicle_id=st.uuids().map(str), status=statuses, reason_codes=codes.map(tuple)
    ),
    max_size=30,
)


@given(members, st.floats(0, 100), st.booleans(), st.booleans())
def test_verdict_follows_the_gates(ms, threshold, deadline_passed, need_evidence) -> None:
    e = evaluate_phase(ms, threshold, deadline_passed, need_evidence=need_evidence)
    judged = [m for m in ms if m.status not in NOT_JUDGED]
    failed_codes = {c for m in judged if m.status is MemberStatus.FAILED for c in m.reason_codes}
    tripped = failed_codes & {"CRASH_LOOP_DETECTED", "READINESS_TIMEOUT"}
    converged = sum(m.status is MemberStatus.CONVERGED for m in judged)
    deferred = sum(m.status is MemberStatus.DEFERRED for m in judged)
    counted = len(judged) - (deferred if deadline_passed else 0)
    pct = 100 * converged / counted if counted else None
    assert (e.counted, e.targeted) == (counted, len(judged))
    assert e.converged_pct == (None if pct is None else round(pct, 2))
    if tripped:
        assert e.verdict is Verdict.FAIL and set(e.reason_codes) == tripped
    elif (pct is None or pct >= threshold) and not (need_evidence and converged == 0):
        assert e.verdict is Verdict.PASS
    else:
        assert e.verdict in (Verdict.FAIL, Verdict.WAIT)
        best = 100 * (len(judged) - e.failed) / len(judged) if judged else 100
        assert (e.verdict is Verdict.WAIT) == (not deadline_passed and best >= threshold)


@given(members, st.floats(0, 100))
def test_at_the_deadline_deferred_vehicles_do_not_change_the_verdict(ms, threshold) -> None:
    """Issue 13 item 3: a vehicle's safety gate is its own authority. At the deadline the
    verdict on the others is the same as if the deferred vehicles were not there, so
    deferral alone never fails a phase (and never rolls back one that converged)."""
    others = [m for m in ms if m.status is not MemberStatus.DEFERRED]
    with_them = evaluate_phase(ms, threshold, deadline_passed=True)
    without = evaluate_phase(others, threshold, deadline_passed=True)
    assert with_them.verdict == without.verdict
    assert with_them.converged_pct == without.converged_pct


@given(members, members, st.floats(0, 100), st.booleans())
def test_a_tripwire_from_an_earlier_phase_fails_the_current_one(
    canaries, wave, threshold, deadline_passed
) -> None:
    """Issue 13 item 2: a tripwire counts whenever it arrives, from any member."""
    crashed = Member("late", MemberStatus.FAILED, ("CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"))
    e = evaluate_phase(wave, threshold, deadline_passed, earlier=[*canaries, crashed])
    assert e.verdict is Verdict.FAIL
    assert "CRASH_LOOP_DETECTED" in e.reason_codes
    assert e.tripped_by["CRASH_LOOP_DETECTED"] >= 1


@given(members, st.floats(0, 100), st.booleans(), st.booleans())
def test_a_bake_fails_exactly_when_the_gate_would_fail_now(
    ms, threshold, deadline_passed, bake_over
) -> None:
    e = evaluate_phase(ms, threshold, deadline_passed)
    verdict = watch_bake(e, bake_over)
    if e.verdict is Verdict.FAIL:
        assert verdict is Verdict.FAIL
    else:
        assert verdict is (Verdict.PASS if bake_over else Verdict.WAIT)


def test_a_canary_phase_with_every_canary_deferred_fails_at_its_deadline() -> None:
    ms = [Member("a", MemberStatus.DEFERRED, ("DENY_OUTSIDE_WINDOW",))]
    assert evaluate_phase(ms, 95, False, need_evidence=True).verdict is Verdict.WAIT
    e = evaluate_phase(ms, 95, True, need_evidence=True)
    assert e.verdict is Verdict.FAIL and e.reason_codes == ["GATE_DEADLINE_EXCEEDED"]
    assert evaluate_phase(ms, 95, True).verdict is Verdict.PASS  # a wave: nothing to judge


def test_a_gate_that_counted_no_member_stores_no_percentage() -> None:
    """The reviewer's canary: deferred by its safety gate until the deadline, so the gate
    failed with 0 of 1 converged; it was stored as convergedPct 100.0 ("100% of 1")."""
    ms = [Member("a", MemberStatus.DEFERRED, ("DENY_MOVING",))]
    canary = evaluate_phase(ms, 95, True, need_evidence=True)
    assert (canary.verdict, canary.counted, canary.converged_pct) == (Verdict.FAIL, 0, None)
    wave = evaluate_phase(ms, 95, True)  # passes vacuously: nobody is below the threshold
    assert (wave.verdict, wave.counted, wave.converged_pct) == (Verdict.PASS, 0, None)
    assert evaluate_phase([], 95, False).converged_pct is None  # all left: none counted
    assert evaluate_phase(ms, 95, False).converged_pct == 0.0  # before the deadline: counted


@given(members, st.floats(0, 100), st.booleans(), st.booleans())
def test_a_stored_decision_shows_its_share_or_none_counted(
    ms, threshold, deadline_passed, need_evidence
) -> None:
    """What every view of a decision shows (rollout_rules.stored_share), from its stored
    form, and the same for a decision stored before the share could be None."""
    e = evaluate_phase(ms, threshold, deadline_passed, need_evidence=need_evidence)
    stored = GateEvaluation.of(e)
    assert stored.converged_pct == e.converged_pct
    shown = stored_share(to_builtins(stored))
    assert (shown is None) == (e.counted == 0)
    assert shown == e.converged_pct
    if e.counted == 0:  # as it was stored before: 100.0 over nobody
        older = {**to_builtins(stored), "convergedPct": 100.0}
        assert msgspec.convert(older, GateEvaluation).converged_pct == 100.0  # still decodes
        assert stored_share(older) is None


def test_vehicles_that_left_are_not_judged() -> None:
    ms = [Member("a", MemberStatus.LEFT), Member("b", MemberStatus.CONVERGED)]
    e = evaluate_phase(ms, 95, deadline_passed=False)
    assert (e.verdict, e.targeted, e.converged_pct) == (Verdict.PASS, 1, 100.0)


@given(st.lists(codes.map(tuple), min_size=1, max_size=20), st.floats(1, 100))
def test_deferred_vehicles_never_fail_a_gate_before_the_deadline(deferrals, threshold) -> None:
    ms = [Member(f"v{i}", MemberStatus.DEFERRED, c) for i, c in enumerate(deferrals)]
    e = evaluate_phase(ms, threshold, deadline_passed=False)
    assert e.verdict is Verdict.WAIT
    assert e.deferred == len(ms)


def test_a_crash_looping_canary_fails_the_gate_with_its_code() -> None:
    ms = [
        Member("a", MemberStatus.FAILED, ("CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED")),
        Member("b", MemberStatus.CONVERGED),
    ]
    e = evaluate_phase(ms, 50, deadline_passed=False)
    assert e.verdict is Verdict.FAIL
    assert e.reason_codes == ["CRASH_LOOP_DETECTED"]
    assert e.failed_by == {"CRASH_LOOP_DETECTED": 1, "ROLLBACK_APPLIED": 1}


def test_the_deadline_fails_a_phase_that_has_not_converged() -> None:
    ms = [Member("a", MemberStatus.ASSIGNED), Member("b", MemberStatus.CONVERGED)]
    assert evaluate_phase(ms, 95, deadline_passed=False).verdict is Verdict.WAIT
    e = evaluate_phase(ms, 95, deadline_passed=True)
    assert e.verdict is Verdict.FAIL and e.reason_codes == ["GATE_DEADLINE_EXCEEDED"]


def test_each_timed_phase_is_limited_by_its_threshold_and_an_old_rollout_did_not_bake() -> None:
    stored = to_builtins(RolloutThresholds(canary_deadline_sec=60, bake_sec=30))
    limits = [phase_limit(stored, state) for state in ("canary", "wave", "baking")]
    assert limits == [60.0, 6 * 3600.0, 30.0]
    del stored["bakeSec"]  # thresholds stored before bakes existed
    assert phase_limit(stored, "baking") == 0.0
