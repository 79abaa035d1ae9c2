"""The one rule for a vehicle's desired-state sequences (Vehicle.next_sequence): every
document signed for it takes the next sequence above both what this cloud issued it and
what its reports said it took, so a cloud restored from a backup never issues one the
vehicle must refuse as STALE_REVISION. Plain data and hypothesis."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.domain.events import DesiredAssignment, StoredReconcile
from muto.domain.model.vehicle import MAX_BELIEVED_SEQUENCE, Vehicle, believed_sequence
from tests.support.spine import unsigned_assignment

ACTOR, CORRELATION = "operator:test", "corr-1"
STATUSES = ["converged", "blocked", "rejected", "rolled_back", "failed"]


def new_vehicle() -> Vehicle:
    return Vehicle(
        vehicle_id="v1", labels={}, attributes={}, actor=ACTOR, correlation_id=CORRELATION
    )


def assignment(revision: str) -> DesiredAssignment:
    return unsigned_assignment(revision, CORRELATION)


def report(
    report_id: str, sequence: int | None, status: str = "converged", revision: str | None = None
) -> StoredReconcile:
    return StoredReconcile(
        schema="muto.reconcile-report.v1",
        report_id=report_id,
        vehicle_id="v1",
        desired_state_revision=revision,
        sequence=sequence,
        status=status,
        observed_at="2026-01-01T00:00:00Z",
    )


def state(vehicle: Vehicle) -> dict[str, Any]:
    return {k: v for k, v in vars(vehicle).items() if k != "_pending_events"}


@pytest.mark.parametrize(
    ("status", "sequence", "believed"),
    [
        ("converged", 3, 3),
        ("blocked", 3, 3),  # e.g. a document held for want of trusted time: authentic
        ("rolled_back", 3, 3),
        ("failed", 3, 3),
        ("rejected", 3, 0),  # a document the vehicle did not take
        ("converged", None, 0),
        ("converged", 0, 0),
        ("converged", -4, 0),
        ("converged", MAX_BELIEVED_SEQUENCE, MAX_BELIEVED_SEQUENCE),
        ("converged", MAX_BELIEVED_SEQUENCE + 1, 0),  # no cloud issued it
        ("converged", 2**53 - 1, 0),
        (None, 3, 3),
    ],
)
def test_what_a_report_shows_the_vehicle_took(
    status: str | None, sequence: int | None, believed: int
) -> None:
    assert believed_sequence(status, sequence) == believed


def test_a_vehicle_ahead_takes_its_next_document_above_what_it_took() -> None:
    vehicle = new_vehicle()
    assert vehicle.assign(assignment("r1"), ACTOR, CORRELATION) == 1
    assert not vehicle.ahead()
    vehicle.record_reconcile(report("a", 3), ACTOR, CORRELATION)
    assert (vehicle.reported(), vehicle.ahead(), vehicle.next_sequence()) == (3, True, 4)
    vehicle.record_reconcile(report("b", 2), ACTOR, CORRELATION)  # an older one: still 3
    assert vehicle.reported() == 3
    assert vehicle.assign(assignment("r2"), ACTOR, CORRELATION) == 4
    assert (vehicle.sequence, vehicle.ahead()) == (4, False)
    assert vehicle.assign(assignment("r3"), ACTOR, CORRELATION) == 5


def test_the_same_revision_signed_again_keeps_the_one_before() -> None:
    """A renewal or a re-issue is no new intent: a rollback still looks back past it."""
    vehicle = new_vehicle()
    vehicle.assign(assignment("r1"), ACTOR, CORRELATION)
    vehicle.assign(assignment("r2"), ACTOR, CORRELATION)
    vehicle.assign(assignment("r2"), "cloud:reissue", CORRELATION)
    assert vehicle.assignment is not None and vehicle.assignment["revision"] == "r2"
    assert vehicle.previous_assignment is not None
    assert vehicle.previous_assignment["revision"] == "r1"


def test_another_revision_at_our_own_sequence_is_ahead_too() -> None:
    """A sequence names one document here: another revision at ours is one a cloud
    before a restore issued, and the vehicle refuses ours as a replay."""
    vehicle = new_vehicle()
    vehicle.assign(assignment("r1"), ACTOR, CORRELATION)
    vehicle.record_reconcile(report("a", 1, revision="r1"), ACTOR, CORRELATION)
    assert not vehicle.ahead()
    vehicle.record_reconcile(report("b", 1, revision="elsewhere"), ACTOR, CORRELATION)
    assert (vehicle.ahead(), vehicle.next_sequence()) == (True, 2)
    vehicle.assign(assignment("r1"), ACTOR, CORRELATION)  # re-issued under 2
    assert not vehicle.ahead()


def test_a_snapshot_from_before_knows_what_its_last_report_said() -> None:
    vehicle = new_vehicle()
    vehicle.assign(assignment("r1"), ACTOR, CORRELATION)
    vehicle.record_reconcile(report("a", 6), ACTOR, CORRELATION)
    del vehicle.reported_sequence  # a snapshot taken before the attribute was
    assert (vehicle.reported(), vehicle.next_sequence()) == (6, 7)
    vehicle.record_reconcile(report("b", 5), ACTOR, CORRELATION)  # older, then kept: 6
    assert vehicle.reported() == 6
    assert vehicle.assign(assignment("r2"), ACTOR, CORRELATION) == 7


OPS = st.one_of(
    st.tuples(st.just("assign"), st.sampled_from(["r1", "r2", "r3"])),
    st.tuples(
        st.just("report"),
        st.sampled_from(STATUSES),
        st.none() | st.integers(min_value=-2, max_value=40) | st.just(2**40),
    ),
)


@given(st.lists(OPS, max_size=30))
def test_every_document_takes_a_sequence_above_all_it_follows(ops: list[tuple[Any, ...]]) -> None:
    vehicle, issued, took = new_vehicle(), 0, 0
    for n, op in enumerate(ops):
        if op[0] == "assign":
            sequence = vehicle.assign(assignment(op[1]), ACTOR, CORRELATION)
            assert sequence == max(issued, took) + 1  # above both, and no further
            issued = sequence
        else:
            _, status, said = op
            vehicle.record_reconcile(report(f"r{n}", said, status), ACTOR, CORRELATION)
            if status != "rejected" and said is not None and 0 < said <= MAX_BELIEVED_SEQUENCE:
                took = max(took, said)
        assert vehicle.ahead() == (took > issued)
    replayed: Vehicle | None = None
    for event in vehicle.collect_events():
        replayed = event.mutate(replayed)
    assert replayed is not None and state(replayed) == state(vehicle)
