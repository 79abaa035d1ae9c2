"""The rollouts view places a member's reports on its revision by the agent's journal,
with the inventory's rule (muto/domain/report_order.py), never by arrival: an older
report delivered late never hides a newer one (a crash loop stays a tripwire), a rebuild
equals the view built batch by batch, and a member whose rollback revision the vehicle
refuses says why (docs/rollouts.md, "Tripwires count whenever they arrive"; "Every
failure carries a reason code")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.controller import RolloutController
from muto.domain.reports import ReconcileStatus
from muto.projections import rows as rows_module
from muto.projections.rollouts import ROLLOUT_STATUS
from tests.support.rollout_plane import CANARY, CODES, CRASH_LOOP, ROLLOUT, Plane
from tests.support.spine import (
    memory_settings,
    postgres_settings,
    sqlite_settings,
    table_rows,
    view_rows,
)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "sqlite without JSON functions",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def plane(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plane]:
    """Each backend's read of a batch's members (rows.py: `Rows.select_in`)."""
    if request.param == "postgres":
        settings = postgres_settings(request.getfixturevalue("postgres_url"), tmp_path)
    elif request.param == "memory":
        settings = memory_settings(tmp_path)
    else:
        if request.param == "sqlite without JSON functions":  # members read row by row
            monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
            monkeypatch.setattr(rows_module, "SQLITE_JSON", False)
        settings = sqlite_settings(tmp_path)
    p = Plane(settings)
    try:
        yield p
    finally:
        p.cp.close()


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "batch by batch"])
def test_a_crash_loop_delivered_before_an_older_converged_fails_the_canary(
    plane: Plane, together: bool
) -> None:
    """The reviewer's scenario: report #2 (rolled back, crash loop) is stored before #1
    (converged) of the same revision. The view showed #1, the last to arrive, and the
    canary gate passed: the wave would have been given the crash-looping release."""
    plane.report(plane.canary, 2, ReconcileStatus.ROLLED_BACK)
    if not together:
        plane.cp.projector.catch_up()
    plane.report(plane.canary, 1, ReconcileStatus.CONVERGED)
    assert plane.member() == ("failed", CRASH_LOOP)
    assert plane.cp.queries.vehicle(CANARY).last_status == "rolled_back"  # the inventory agrees
    plane.assert_rebuild_equal()
    controller = RolloutController(plane.cp)
    assert controller.tick() == 1
    plane.cp.projector.catch_up()
    rollout = plane.cp.queries.rollout(ROLLOUT)
    assert rollout.state == "aborted"
    assert [(d.event, d.reason_code) for d in rollout.decisions] == [
        ("CanaryGateFailed", "CANARY_GATE_FAILED")
    ]


def test_a_newer_report_still_replaces_an_older_one(plane: Plane) -> None:
    plane.report(plane.canary, 1, ReconcileStatus.BLOCKED)
    assert plane.member() == ("deferred", ["DENY_MOVING"])
    plane.report(plane.canary, 2, ReconcileStatus.CONVERGED)
    plane.report(plane.canary, 2, ReconcileStatus.CONVERGED)  # re-delivered
    plane.report(plane.canary, 1, ReconcileStatus.BLOCKED)  # late
    assert plane.member() == ("converged", [])
    plane.assert_rebuild_equal()


def test_reports_without_a_place_keep_the_old_order(plane: Plane) -> None:
    """Agents before the journal's count: by (sequence, observedAt), which for one agent's
    reports of one revision is the order it sent them; a placed report is newer than
    every report without a place."""
    plane.report(plane.canary, None, ReconcileStatus.BLOCKED, minute=1)
    plane.report(plane.canary, None, ReconcileStatus.CONVERGED, minute=2)
    assert plane.member() == ("converged", [])
    plane.report(plane.canary, None, ReconcileStatus.BLOCKED, minute=1)  # older: ignored
    assert plane.member() == ("converged", [])
    plane.report(plane.canary, 1, ReconcileStatus.FAILED)
    plane.report(plane.canary, None, ReconcileStatus.CONVERGED, minute=3)
    assert plane.member() == ("failed", ["APPLY_FAILED"])
    plane.assert_rebuild_equal()


def test_a_refused_rollback_revision_says_why(plane: Plane) -> None:
    """The reviewer's scenario: the vehicle was away during the rollback and refuses its
    revision on return (expired); it still runs the bad release. The member stayed a
    clean `rolled_back` with no code; it is `rolling_back` (outstanding) until it takes it."""
    plane.report(plane.canary, 1, ReconcileStatus.CONVERGED)
    rollback = plane.roll_back()
    assert plane.member() == ("rolling_back", [])  # nothing heard on it yet
    plane.report(rollback, 2, ReconcileStatus.REJECTED)
    assert plane.member() == ("rolling_back", ["DESIRED_STATE_EXPIRED"])
    found = plane.cp.queries.rollout(ROLLOUT)
    phases = found.phases
    assert (phases["canary"].rolling_back, phases["canary"].rolled_back) == (1, 0)
    assert phases["canary"].rolling_back_by == {"DESIRED_STATE_EXPIRED": 1}  # and why
    assert [(w.vehicle_id, w.status) for w in found.outstanding] == [(CANARY, "rolling_back")]
    assert found.outstanding_total == 1
    plane.report(plane.canary, 3, ReconcileStatus.CONVERGED)  # the old revision: not judged
    assert plane.member() == ("rolling_back", ["DESIRED_STATE_EXPIRED"])
    plane.assert_rebuild_equal()


def test_a_rollback_that_took_shows_the_codes_it_had_when_rolled_back(plane: Plane) -> None:
    """Held by a gate first (why it has not taken yet), then converged: the member shows
    the crash loop that it was rolled back with, as a converged rollback always did;
    the late blocked report changes nothing."""
    plane.report(plane.canary, 1, ReconcileStatus.ROLLED_BACK)
    rollback = plane.roll_back()
    assert plane.member() == ("rolling_back", [])
    plane.report(rollback, 2, ReconcileStatus.BLOCKED)
    assert plane.member() == ("rolling_back", ["DENY_MOVING"])  # held: still runs it
    plane.report(rollback, 4, ReconcileStatus.CONVERGED)
    plane.report(rollback, 3, ReconcileStatus.BLOCKED)  # older, late
    assert plane.member() == ("rolled_back", CRASH_LOOP)
    assert plane.cp.queries.rollout(ROLLOUT).outstanding_total == 0
    assert plane.cp.queries.rollout(ROLLOUT).phases["canary"].rolled_back_by == {
        "CRASH_LOOP_DETECTED": 1,
        "ROLLBACK_APPLIED": 1,
    }
    plane.assert_rebuild_equal()


def test_a_member_rolled_back_twice_keeps_the_codes_of_its_first_rollback(plane: Plane) -> None:
    plane.report(plane.canary, 1, ReconcileStatus.ROLLED_BACK)
    first = plane.roll_back()
    plane.report(first, 2, ReconcileStatus.REJECTED)
    second = plane.roll_back()
    assert plane.member() == ("rolling_back", [])  # nothing heard on the new one yet
    plane.report(first, 3, ReconcileStatus.CONVERGED)  # a replaced revision: not judged
    assert plane.member() == ("rolling_back", [])
    plane.report(second, 4, ReconcileStatus.CONVERGED)
    assert plane.member() == ("rolled_back", CRASH_LOOP)
    plane.assert_rebuild_equal()


# -- properties: batches and rebuilds agree, and only the newest report counts -----------

STATUSES = st.sampled_from(list(ReconcileStatus))


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """The canary's reports #1..n on its revision delivered in any order, some twice;
    maybe a rollback after any of them, then reports #n+1..m on the rollback revision
    (any order, some twice)."""

    def shuffled(numbers: range) -> list[tuple[str, int, ReconcileStatus]]:
        made = [(n, draw(STATUSES)) for n in numbers]
        out = list(draw(st.permutations(made)))
        for report in draw(st.lists(st.sampled_from(made), max_size=3)) if made else []:
            out.insert(draw(st.integers(0, len(out))), report)
        return [("report", n, status) for n, status in out]

    n = draw(st.integers(1, 5))
    ops: list[tuple[Any, ...]] = shuffled(range(1, n + 1))
    if draw(st.booleans()):
        ops.insert(draw(st.integers(0, len(ops))), ("rollback",))
        ops += shuffled(range(n + 1, n + 1 + draw(st.integers(0, 4))))
    return ops


def expected(ops: list[tuple[Any, ...]]) -> tuple[str, list[str]]:
    """The member by the rule in prose: the newest report (highest number) of those
    delivered on the member's revision; given a rollback, `rolled_back` with the codes
    it had then once the newest report on the rollback is converged, else
    `rolling_back` with that report's codes (none before one)."""
    newest: dict[str, tuple[int, ReconcileStatus]] = {}
    revision, rolled_back = "canary", False
    status, codes = "assigned", []
    for op in ops:
        if op[0] == "rollback":
            rolled_back, revision = True, "rollback"
            continue
        _, number, reported = op
        if number <= newest.get(revision, (0, reported))[0]:
            continue
        newest[revision] = number, reported
        if revision == "canary":  # reports on the canary after its rollback go elsewhere
            status, codes = ROLLOUT_STATUS[reported], CODES[reported]
    if rolled_back:
        reported_on = newest.get("rollback", (0, None))[1]
        if reported_on is ReconcileStatus.CONVERGED:
            status = "rolled_back"
        else:
            status, codes = "rolling_back", CODES[reported_on] if reported_on else []
    return status, [str(c) for c in codes]


def member_after(ops: list[tuple[Any, ...]], catch_up_every: int) -> dict[str, Any]:
    """The canary's member row after `ops` on a fresh plane, its views caught up after
    every `catch_up_every` operations; the rebuild must equal it."""
    plane = Plane(memory_settings(Path("unused")))
    try:
        for i, op in enumerate(ops, 1):
            if op[0] == "rollback":
                plane.roll_back()
            else:
                _, number, status = op
                revision = plane.rollbacks[-1] if plane.rollbacks else plane.canary
                plane.report(revision, number, status)
            if i % catch_up_every == 0:
                plane.cp.projector.catch_up()
        assert plane.member() == expected(ops)
        plane.assert_rebuild_equal()
        (row,) = [
            r for r in table_rows(plane.cp.views, plane.cp.views.rollouts.vehicles)
            if r["vehicle_id"] == CANARY
        ]  # fmt: skip
        per_plane = ("revision", "assigned_revision", "updated_at")  # ids and times differ
        return {k: v for k, v in row.items() if k not in per_plane}
    finally:
        plane.cp.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.integers(2, 12))
@example([("report", 2, ReconcileStatus.ROLLED_BACK), ("report", 1, ReconcileStatus.CONVERGED)], 2)
@example(
    [
        ("report", 1, ReconcileStatus.ROLLED_BACK),
        ("rollback",),
        ("report", 3, ReconcileStatus.CONVERGED),
        ("report", 2, ReconcileStatus.REJECTED),
    ],
    4,
)
def test_batches_equal_one_by_one_and_the_newest_report_counts(
    ops: list[tuple[Any, ...]], catch_up_every: int
) -> None:
    assert member_after(ops, catch_up_every) == member_after(ops, 1)


def test_an_old_store_rebuilds_the_view_with_its_new_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store written before the view kept report ledgers: opening it rebuilds the
    rollouts view from the log (ViewStore.reshape), which then orders its reports."""
    plane = Plane(sqlite_settings(tmp_path))
    plane.report(plane.canary, 2, ReconcileStatus.ROLLED_BACK)
    plane.report(plane.canary, 1, ReconcileStatus.CONVERGED)
    plane.cp.projector.catch_up()
    before = view_rows(plane.cp.views)
    with plane.cp.views.store.engine.begin() as connection:  # the shape of the release before
        for column in ("report_ledger", "rollback_codes"):
            connection.execute(text(f"ALTER TABLE view_rollout_vehicles DROP COLUMN {column}"))
    plane.cp.close()
    plane.cp = ControlPlane.open(sqlite_settings(tmp_path))
    try:
        assert any("view rollouts changed shape" in r.getMessage() for r in caplog.records), (
            caplog.text
        )
        assert plane.member() == ("failed", CRASH_LOOP)
        assert view_rows(plane.cp.views) == before
    finally:
        plane.cp.close()
