"""Aggregate invariants with plain data, and the journal property: replaying an
aggregate's events (in memory, or through the store and its snapshots) gives back the
state it had when it lived through them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muto.cloud.eventlog import EventLog
from muto.domain.events import (
    DesiredAssignment,
    GateEvaluation,
    HealthSummary,
    RolloutPolicy,
    StoredReconcile,
)
from muto.domain.model.release import Release
from muto.domain.model.rollout import Rollout, RolloutFinal, RolloutState, RolloutStateError
from muto.domain.model.vehicle import RECENT_REPORT_IDS, Vehicle
from muto.domain.requests import RolloutThresholds
from tests.support.releases import signed_release
from tests.support.spine import memory_settings, unsigned_assignment

ACTOR, CORRELATION = "operator:test", "corr-1"


def new_vehicle(vehicle_id: str = "v1") -> Vehicle:
    return Vehicle(
        vehicle_id=vehicle_id,
        labels={"model": "m3"},
        attributes={"os": "ubuntu-22.04"},
        actor=ACTOR,
        correlation_id=CORRELATION,
    )


def new_rollout(canaries: tuple[str, ...] = ("c1",), wave: tuple[str, ...] = ("w1",)) -> Rollout:
    return Rollout(
        rollout_id="ro-1",
        selector="model=m3",
        release_key="core@2.0.0",
        manifest_digest="sha256:" + "1" * 64,
        policy=RolloutPolicy(),
        thresholds=RolloutThresholds(converged_pct=95.0, canary_deadline_sec=1800.0),
        canaries=list(canaries),
        wave=list(wave),
        previous_releases={"c1": "core@1.0.0", "w1": None},
        started_at="2026-01-01T00:00:00+00:00",
        actor=ACTOR,
        correlation_id=CORRELATION,
    )


def report(report_id: str, status: str = "converged") -> StoredReconcile:
    return StoredReconcile(
        schema="muto.reconcile-report.v1",
        report_id=report_id,
        vehicle_id="v1",
        status=status,
        observed_at="2026-01-01T00:00:00Z",
    )


def assignment(revision: str) -> DesiredAssignment:
    return unsigned_assignment(revision, CORRELATION)


def health(report_id: str) -> HealthSummary:
    return HealthSummary(report_id=report_id, reason_codes=[], observed_at="2026-01-01T00:00:00Z")


EVALUATION = GateEvaluation(
    verdict="pass", targeted=1, converged=1, deferred=0, failed=0,
    converged_pct=100.0, threshold_pct=95.0,
)  # fmt: skip


def state(aggregate: Aggregate) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def pending(aggregate: Aggregate) -> int:
    return len(aggregate.pending_events)


# -- Vehicle ------------------------------------------------------------------------------


def test_each_assignment_takes_the_next_sequence() -> None:
    vehicle = new_vehicle()
    sequences = [vehicle.assign(assignment(f"r{i}"), ACTOR, CORRELATION) for i in range(5)]
    assert sequences == [1, 2, 3, 4, 5]
    assert vehicle.sequence == 5
    # The aggregate keeps plain dicts (its snapshots always encode).
    assert vehicle.assignment is not None and vehicle.assignment["revision"] == "r4"
    assert vehicle.previous_assignment is not None
    assert vehicle.previous_assignment["revision"] == "r3"


def test_a_report_id_is_recorded_once() -> None:
    vehicle = new_vehicle()
    assert vehicle.record_reconcile(report("r1"), ACTOR, CORRELATION) is True
    events = pending(vehicle)
    assert vehicle.record_reconcile(report("r1", "failed"), ACTOR, CORRELATION) is False
    assert pending(vehicle) == events
    assert vehicle.last_report == msgspec.to_builtins(report("r1"))


def test_recent_report_ids_are_bounded() -> None:
    vehicle = new_vehicle()
    total = RECENT_REPORT_IDS + 44
    for i in range(total):
        assert vehicle.record_reconcile(report(f"r{i}"), ACTOR, CORRELATION)
    assert len(vehicle.recent_report_ids) == RECENT_REPORT_IDS
    assert vehicle.recent_report_ids[-1] == f"r{total - 1}"
    assert vehicle.recent_report_ids[0] == f"r{total - RECENT_REPORT_IDS}"
    # Every id still in the window is refused again.
    assert not any(
        vehicle.record_reconcile(report(r), ACTOR, CORRELATION) for r in vehicle.recent_report_ids
    )


def test_health_and_presence_store_transitions_only() -> None:
    vehicle = new_vehicle()
    said = ["healthy", "healthy", "degraded", "healthy", "healthy"]
    recorded = [
        vehicle.record_health(s, health(f"h{i}"), ACTOR, CORRELATION) for i, s in enumerate(said)
    ]
    assert recorded == [
        True,
        False,
        True,
        True,
        False,
    ]
    presence = ["online", "online", "offline", "offline"]
    assert [vehicle.record_presence(s, None, ACTOR, CORRELATION) for s in presence] == [
        True,
        False,
        True,
        False,
    ]
    assert (vehicle.health, vehicle.presence) == ("healthy", "offline")
    assert vehicle.version == 1 + 3 + 2


def test_update_merges_and_none_removes() -> None:
    vehicle = new_vehicle()
    vehicle.update(
        labels={"region": "eu", "model": None},
        attributes={"os": "debian-12"},
        actor=ACTOR,
        correlation_id=CORRELATION,
    )
    assert vehicle.labels == {"region": "eu"}
    assert vehicle.attributes == {"os": "debian-12"}


# -- Release ------------------------------------------------------------------------------


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    event_log = EventLog.open(memory_settings(tmp_path))
    yield event_log
    event_log.close()


def new_release(size: int) -> Release:
    """core@1.0.0, signed; another `size` gives another manifest digest."""
    made = signed_release("core", "1.0.0", size=size)
    return Release(
        key=made.key,
        manifest_digest=made.digest,
        manifest=made.release,
        envelope=made.envelope,
        actor=ACTOR,
        correlation_id=CORRELATION,
    )


def test_a_release_is_one_event_under_a_stable_id(log: EventLog) -> None:
    first = new_release(1)
    assert first.id == Release.create_id("core@1.0.0") != Release.create_id("core@1.0.1")
    assert pending(first) == 1
    log.save(first)
    # A second registration of the same key collides in the store instead of forking
    # history, whatever it claims.
    with pytest.raises(IntegrityError):
        log.save(new_release(2))
    assert log.repository.get(first.id).manifest_digest == first.manifest_digest


# -- Rollout ------------------------------------------------------------------------------

Step = Callable[[Rollout], None]
DECIDED: dict[str, Any] = {"evaluation": EVALUATION, "actor": ACTOR, "correlation_id": "c"}
STEPS: dict[str, Step] = {
    "assign canary": lambda r: r.record_assigned("canary", "rev", ["c1"], "t", ACTOR, "c"),
    "assign wave": lambda r: r.record_assigned("wave", "rev", ["w1"], "t", ACTOR, "c"),
    "pass canary": lambda r: r.decide("canary", passed=True, **DECIDED),
    "fail canary": lambda r: r.decide("canary", passed=False, **DECIDED),
    "pass wave": lambda r: r.decide("wave", passed=True, **DECIDED),
    "fail wave": lambda r: r.decide("wave", passed=False, **DECIDED),
    "complete bake": lambda r: r.decide("baking", passed=True, **DECIDED),
    "fail bake": lambda r: r.decide("baking", passed=False, **DECIDED),
    "pause": lambda r: r.pause(ACTOR, "c"),
    "resume": lambda r: r.resume(ACTOR, "c"),
}
PATHS = {  # how to reach each state from a new rollout
    RolloutState.CANARY: [],
    RolloutState.WAVE: ["pass canary"],
    RolloutState.BAKING: ["pass canary", "pass wave"],
    RolloutState.COMPLETED: ["pass canary", "pass wave", "complete bake"],
    RolloutState.ABORTED: ["fail canary"],
    RolloutState.ROLLED_BACK: ["pass canary", "fail wave"],
}
ALLOWED = {
    RolloutState.CANARY: {"assign canary", "pass canary", "fail canary", "pause", "resume"},
    RolloutState.WAVE: {"assign wave", "pass wave", "fail wave", "pause", "resume"},
    RolloutState.BAKING: {"complete bake", "fail bake", "pause", "resume"},
    RolloutState.COMPLETED: set(),
    RolloutState.ABORTED: set(),
    RolloutState.ROLLED_BACK: set(),
}
NEXT = {
    "pass canary": RolloutState.WAVE,
    "fail canary": RolloutState.ABORTED,
    "pass wave": RolloutState.BAKING,
    "fail wave": RolloutState.ROLLED_BACK,
    "complete bake": RolloutState.COMPLETED,
    "fail bake": RolloutState.ROLLED_BACK,
}


def rollout_in(rollout_state: RolloutState) -> Rollout:
    rollout = new_rollout()
    for step in PATHS[rollout_state]:
        STEPS[step](rollout)
    assert rollout.state == rollout_state
    return rollout


@pytest.mark.parametrize("rollout_state", list(RolloutState))
@pytest.mark.parametrize("step", list(STEPS))
def test_the_rollout_state_machine(rollout_state: RolloutState, step: str) -> None:
    rollout = rollout_in(rollout_state)
    before, events = state(rollout), pending(rollout)
    if step in ALLOWED[rollout_state]:
        STEPS[step](rollout)
        assert rollout.state == NEXT.get(step, rollout_state)
    else:
        with pytest.raises(RolloutStateError):
            STEPS[step](rollout)
        assert state(rollout) == before
        assert pending(rollout) == events
    assert rollout.is_final == (rollout.state not in ("canary", "wave", "baking"))
    assert not (rollout.is_final and rollout.paused)


@pytest.mark.parametrize("rollout_state", [RolloutState.CANARY, RolloutState.WAVE])
@pytest.mark.parametrize("ending", ["rollback", "fail"])
def test_a_rollout_that_ends_while_paused_is_not_paused(rollout_state: str, ending: str) -> None:
    """Issue 13 item 7: a final rollout is never paused, and pause/resume on it answer
    `rollout_final`."""
    rollout = rollout_in(RolloutState(rollout_state))
    STEPS["pause"](rollout)
    if ending == "rollback":
        rollout.record_rolled_back("rev-back", ["c1"], "OPERATOR_ROLLBACK", ACTOR, "c")
    else:
        STEPS[f"fail {rollout_state}"](rollout)
    assert rollout.is_final and not rollout.paused
    for step in ("pause", "resume"):
        with pytest.raises(RolloutFinal) as raised:
            STEPS[step](rollout)
        assert raised.value.code == "rollout_final"


def test_time_spent_paused_pushes_the_phase_deadline_out() -> None:
    rollout = new_rollout()
    rollout.record_assigned("canary", "rev", ["c1"], "2026-01-01T00:00:00+00:00", ACTOR, "c")
    assert rollout.deadline("canary") == "2026-01-01T00:30:00+00:00"
    rollout.pause(ACTOR, "c", "2026-01-01T00:01:00+00:00")
    rollout.resume(ACTOR, "c", "2026-01-01T00:11:00+00:00")
    assert rollout.deadline("canary") == "2026-01-01T00:40:00+00:00"


@pytest.mark.parametrize("rollout_state", [RolloutState.CANARY, RolloutState.WAVE])
def test_a_paused_rollout_assigns_nothing(rollout_state: RolloutState) -> None:
    rollout = rollout_in(rollout_state)
    STEPS["pause"](rollout)
    events = pending(rollout)
    with pytest.raises(RolloutStateError, match="paused"):
        STEPS[f"assign {rollout_state}"](rollout)
    STEPS["pause"](rollout)  # pausing twice stores nothing
    assert pending(rollout) == events
    STEPS["resume"](rollout)
    STEPS[f"assign {rollout_state}"](rollout)
    assert rollout.assigned == {"c1" if rollout_state == "canary" else "w1": "rev"}


def test_a_rollback_ends_a_live_rollout_and_is_recorded_after_the_end() -> None:
    live = rollout_in(RolloutState.WAVE)
    live.record_rolled_back("rev-back", ["w1", "w1"], "operator", ACTOR, "c")
    assert (live.state, live.rolled_back) == ("rolled_back", ["w1"])

    aborted = rollout_in(RolloutState.ABORTED)
    aborted.record_rolled_back("rev-back", ["c1"], "canary gate", ACTOR, "c")
    assert (aborted.state, aborted.rolled_back) == ("aborted", ["c1"])


# -- the journal property -----------------------------------------------------------------

VEHICLE_OPS = st.one_of(
    st.tuples(st.just("assign"), st.text("abc", min_size=1, max_size=3)),
    st.tuples(st.just("reports"), st.integers(1, 60), st.integers(0, 400)),
    st.tuples(st.just("health"), st.sampled_from(["healthy", "degraded", "unhealthy"])),
    st.tuples(st.just("presence"), st.sampled_from(["online", "offline"])),
    st.tuples(
        st.just("update"),
        st.dictionaries(st.sampled_from(["region", "ring"]), st.none() | st.just("x")),
    ),
    st.tuples(st.just("save")),
)


def live(vehicle: Vehicle, op: tuple[Any, ...]) -> None:
    match op:
        case ("assign", revision):
            vehicle.assign(assignment(revision), ACTOR, CORRELATION)
        case ("reports", count, first):
            for i in range(first, first + count):
                vehicle.record_reconcile(report(f"r{i}"), ACTOR, CORRELATION)
        case ("health", status):
            vehicle.record_health(status, health(uuid4().hex), ACTOR, CORRELATION)
        case ("presence", status):
            vehicle.record_presence(status, None, ACTOR, CORRELATION)
        case ("update", labels):
            vehicle.update(labels=labels, attributes={}, actor=ACTOR, correlation_id=CORRELATION)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VEHICLE_OPS, max_size=25))
def test_replaying_a_vehicle_journal_gives_its_state(ops: list[tuple[Any, ...]]) -> None:
    log = EventLog.open(memory_settings(Path("unused")))
    try:
        vehicle, journal = new_vehicle(), []
        for op in [*ops, ("save",)]:
            if op[0] == "save":
                journal.extend(vehicle.pending_events)
                log.save(vehicle)
            else:
                live(vehicle, op)

        replayed: Vehicle | None = None
        for event in journal:
            replayed = event.mutate(replayed)
        assert replayed is not None
        assert state(replayed) == state(vehicle)
        # Through the store: transcoded, and from a snapshot once past 100 events.
        stored = log.repository.get(vehicle.id)
        assert state(stored) == state(vehicle)
    finally:
        log.close()


def test_a_vehicle_loaded_from_its_snapshot_equals_the_live_one(log: EventLog) -> None:
    vehicle, journal, saved = new_vehicle(), [], []
    for start in (0, 120, 240):
        live(vehicle, ("reports", 120, start))
        live(vehicle, ("health", "degraded" if start else "healthy"))
        journal.extend(vehicle.pending_events)
        log.save(vehicle)
        saved.append(vehicle.version)
    # Each save crossed a multiple of 100: one snapshot, taken from memory at the version
    # saved (the library reloaded the aggregate to take it at the multiple itself).
    assert log.snapshots is not None
    assert [s.originator_version for s in log.snapshots.get(vehicle.id)] == saved
    assert state(log.repository.get(vehicle.id)) == state(vehicle)
    for version in (99, 150, saved[1], 300):  # the newest snapshot at or below, then events
        replayed: Vehicle | None = None
        for event in journal[:version]:
            replayed = event.mutate(replayed)
        assert replayed is not None
        assert state(log.repository.get(vehicle.id, version=version)) == state(replayed)


ROLLOUT_STEPS = st.lists(st.sampled_from([*STEPS, "rollback"]), max_size=12)


@settings(max_examples=40, deadline=None)
@given(ROLLOUT_STEPS)
def test_replaying_a_rollout_journal_gives_its_state(steps: list[str]) -> None:
    log = EventLog.open(memory_settings(Path("unused")))
    try:
        rollout = new_rollout()
        for step in steps:
            try:
                if step == "rollback":
                    rollout.record_rolled_back("rev-back", ["c1"], "operator", ACTOR, "c")
                else:
                    STEPS[step](rollout)
            except RolloutStateError:
                pass
        log.save(rollout)
        assert state(log.repository.get(rollout.id)) == state(rollout)
    finally:
        log.close()


def test_rollout_events_stored_before_times_and_codes_still_replay() -> None:
    """Paused/Resumed and gate events stored before they carried `at` and `reason_code`
    (the fields added for issue 13) still decode and apply, with empty defaults."""
    import json
    from dataclasses import replace

    log = EventLog.open(memory_settings(Path("unused")))
    try:
        rollout = new_rollout()
        STEPS["pause"](rollout)
        STEPS["resume"](rollout)
        STEPS["pass canary"](rollout)
        log.save(rollout)
        stored = log.recorder.select_events(rollout.id)
        replayed, dropped = None, 0
        for record in stored:
            state = json.loads(record.state)
            dropped += ("at" in state) + ("reason_code" in state)
            state.pop("at", None)
            state.pop("reason_code", None)
            state.pop("class_version", None)  # as stored then: schema v1
            old = replace(record, state=json.dumps(state).encode())
            replayed = log.mapper.to_domain_event(old).mutate(replayed)
        assert replayed is not None and dropped >= 4
        assert (replayed.state, replayed.paused, replayed.paused_sec) == (
            "wave",
            False,
            {"canary": 0.0},
        )
    finally:
        log.close()
