"""The fleet view shows a vehicle's latest reconcile report by the agent's journal, never
by the vehicle's clock (issue #14, item 18), through the real cloud: the writer (which
drops re-deliveries by report id), the event log, the inventory projection and a rebuild.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from muto.agent.journal import Journal
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import record_reconcile
from muto.domain.desired import StackRef
from muto.domain.reasons import ReasonCode
from muto.domain.report_order import ReportLedger, ReportPlace, admit, legacy_key
from muto.domain.reports import ReconcileReport, ReconcileStatus
from tests.support.agent_rig import VEHICLE as AGENT_VEHICLE
from tests.support.agent_rig import Rig, make_rig, release
from tests.support.spine import (
    memory_settings,
    reconcile_report,
    register_fleet,
    registration,
    view_rows,
)

VEHICLE = "vehicle-v4-us-east-00045"
SIX_HOURS = 6 * 60
A, B, C = release("1.0.0"), release("2.0.0"), release("3.0.0")


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    plane = open_plane()
    try:
        yield plane
    finally:
        plane.close()


def open_plane() -> ControlPlane:
    plane = ControlPlane.open(memory_settings(Path("unused")))
    register_fleet(plane, [registration(VEHICLE)])
    return plane


def made(
    journal: str | None,
    number: int,
    skew_min: int = 0,
    status: ReconcileStatus = ReconcileStatus.CONVERGED,
    sequence: int | None = 1,
) -> ReconcileReport:
    """The `number`th report of a journal, stamped `skew_min` minutes off by the vehicle's
    clock; its running version names it, so the view shows which report it kept."""
    codes = [] if status is ReconcileStatus.CONVERGED else [ReasonCode.DENY_OUTSIDE_WINDOW]
    return reconcile_report(
        VEHICLE,
        f"{journal}-{number}",
        status,
        reason_codes=codes,
        running=StackRef(name="core", version=f"{journal}.{number}"),
        minute=number + skew_min,
        sequence=sequence,
        journal=ReportPlace(incarnation=journal, number=number) if journal else None,
    )


def deliver(plane: ControlPlane, *reports: ReconcileReport) -> None:
    for report in reports:
        plane.writer.execute(record_reconcile(report, f"vehicle:{VEHICLE}"))


def shown(plane: ControlPlane) -> str | None:
    plane.projector.catch_up()
    release = plane.queries.vehicle(VEHICLE).running_release
    return str(release).removeprefix("core@") if release else None


def assert_rebuild_equal(plane: ControlPlane) -> None:
    plane.projector.catch_up()
    incremental = view_rows(plane.views)
    plane.projector.rebuild("inventory")
    assert view_rows(plane.views) == incremental, "rebuilding the inventory changed it"


def test_the_demo_vehicle_shows_converged_after_its_clock_came_back(cp: ControlPlane) -> None:
    """`make demo`'s vehicle-v4-us-east-00045: blocked (DENY_OUTSIDE_WINDOW) with its
    clock six hours ahead, then converged once the clock came back, both answering the
    same desired-state sequence. The view kept `blocked` (newest by observedAt)."""
    ahead = made("j", 1, SIX_HOURS, ReconcileStatus.BLOCKED)
    back = made("j", 2)
    assert ahead.observed_at > back.observed_at
    deliver(cp, ahead, back)
    cp.projector.catch_up()
    vehicle = cp.queries.vehicle(VEHICLE)
    assert (vehicle.last_status, vehicle.last_reason_codes) == ("converged", [])
    assert vehicle.running_release == "core@j.2"
    assert vehicle.last_report_at == "2026-01-01T00:02:00Z"  # information only
    assert_rebuild_equal(cp)


def shown_in_batches(delivered: list[ReconcileReport], catch_up_every: int) -> str | None:
    """What a fresh plane shows after `delivered`, its views caught up after every
    `catch_up_every` reports; a rebuild in one batch must show the same."""
    plane = open_plane()
    try:
        for i, report in enumerate(delivered, 1):
            deliver(plane, report)
            if i % catch_up_every == 0:
                plane.projector.catch_up()
        found = shown(plane)
        assert_rebuild_equal(plane)
        return found
    finally:
        plane.close()


# -- properties ---------------------------------------------------------------------------

SKEWS = st.integers(-40 * 24 * 60, 40 * 24 * 60)  # fault scenario 10: 40 days either way


@st.composite
def deliveries(draw: st.DrawFn, journal: str, count: int) -> list[ReconcileReport]:
    """Reports 1..count of one journal, each with its own clock skew, delivered in any
    order, some more than once."""
    made_ = [
        made(journal, n, draw(SKEWS), draw(st.sampled_from(list(ReconcileStatus))))
        for n in range(1, count + 1)
    ]
    order = draw(st.permutations(made_))
    again = draw(st.lists(st.sampled_from(made_), max_size=count))
    at = draw(st.lists(st.integers(0, len(order)), min_size=len(again), max_size=len(again)))
    out = list(order)
    for report, index in zip(again, at, strict=True):
        out.insert(index, report)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 8).flatmap(lambda n: deliveries("j", n)), st.integers(1, 4))
def test_any_clock_skew_any_delivery_order_shows_the_latest(
    delivered: list[ReconcileReport], catch_up_every: int
) -> None:
    latest = max(r.journal.number for r in delivered if r.journal)
    assert shown_in_batches(delivered, catch_up_every) == f"j.{latest}"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 6).flatmap(lambda n: deliveries("old", n)),
    st.integers(1, 6).flatmap(lambda n: deliveries("new", n)),
    st.data(),
)
def test_a_wiped_journal_restarts_the_count_and_is_never_frozen(
    before: list[ReconcileReport], after: list[ReconcileReport], data: st.DataObject
) -> None:
    """The journal is wiped (or replaced): its count restarts at 1 under a new
    incarnation, while late re-deliveries of the old journal's reports keep arriving."""
    late = data.draw(st.lists(st.sampled_from(before), max_size=4))
    mixed = list(after)
    for report in late:
        mixed.insert(data.draw(st.integers(0, len(mixed))), report)
    plane = open_plane()
    try:
        deliver(plane, *before)
        plane.projector.catch_up()
        deliver(plane, *mixed)
        latest = max(r.journal.number for r in after if r.journal)
        assert shown(plane) == f"new.{latest}"
        assert_rebuild_equal(plane)
    finally:
        plane.close()


def test_a_replaced_journal_that_reports_again_is_shown_again(cp: ControlPlane) -> None:
    """A report of a retired journal above the number it had reached means that journal
    lives (the report was still on its way when the other one appeared): shown, and the
    other journal's next report takes over again. Neither is ever frozen out."""
    deliver(cp, made("a", 1), made("a", 2), made("b", 1))
    assert shown(cp) == "b.1"
    deliver(cp, made("a", 2), made("a", 1))  # late duplicates
    assert shown(cp) == "b.1"
    deliver(cp, made("a", 3))
    assert shown(cp) == "a.3"
    deliver(cp, made("b", 2))
    assert shown(cp) == "b.2"
    assert_rebuild_equal(cp)


def test_reports_without_a_place_keep_the_old_order(cp: ControlPlane) -> None:
    """Reports stored before the count (and from older agents): by (sequence,
    observedAt), as before; the first placed report is newer than all of them."""
    deliver(cp, made(None, 2, sequence=2), made(None, 1, sequence=2), made(None, 9, sequence=1))
    assert shown(cp) == "None.2"
    deliver(cp, made("j", 1, -SIX_HOURS))
    assert shown(cp) == "j.1"
    deliver(cp, made(None, 50, sequence=9))  # an old agent's outbox, delivered late
    assert shown(cp) == "j.1"
    assert_rebuild_equal(cp)


@st.composite
def mixed_reports(draw: st.DrawFn) -> list[ReconcileReport]:
    """Reports of two journals and of agents without one (any sequence, any clock),
    interleaved in any order, some delivered twice."""
    one = st.one_of(
        st.builds(made, st.sampled_from(["a", "b"]), st.integers(1, 6), SKEWS),
        st.builds(lambda n, seq, skew: made(None, n, skew, sequence=seq),
                  st.integers(1, 6), st.none() | st.integers(0, 3), SKEWS),
    )  # fmt: skip
    reports = draw(st.lists(one, min_size=1, max_size=12))
    return reports + draw(st.lists(st.sampled_from(reports), max_size=3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed_reports(), st.integers(1, 5))
# In one batch (the rebuild): b.2 moves the number after b.1 retired journal a, and the
# late a.1 must still find a retired.
@example([made("a", 2), made("b", 1), made("b", 2), made("a", 1, 16 * 24 * 60)], 1)
def test_the_view_shows_what_placing_each_report_in_turn_shows(
    delivered: list[ReconcileReport], catch_up_every: int
) -> None:
    """The inventory projects a batch's reports together and writes each vehicle's
    shown report and ledger once per batch: whatever the batches, it shows the report
    that admitting the reports one by one (report_order.admit) ends on, and a rebuild
    in one batch shows the same row."""
    ledger, expected = ReportLedger(), None
    for report in delivered:
        key = legacy_key(report.sequence, report.observed_at)
        placed = admit(ledger, report.journal, lambda: key)  # noqa: B023 - called at once
        if placed is not None:
            ledger, expected = placed, report
    assert expected is not None and expected.running is not None
    assert shown_in_batches(delivered, catch_up_every) == expected.running.version


# -- a real agent's reports: a data dir restored from a backup ----------------------------


def again(rig: Rig, journal: Journal, **settings: Any) -> Rig:
    """The agent restarted on `journal` (the same vehicle, cloud and artifacts)."""
    return make_rig(
        signers=rig.signers, cloud=rig.cloud, journal=journal, clock=rig.clock,
        artifacts=rig.artifacts, **settings,
    )  # fmt: skip


async def converge(rig: Rig, target: object, sequence: int) -> None:
    rig.cloud.serve(rig.signers.bundle(target, sequence))
    assert (await rig.reconcile()).kind == "converged"
    await rig.deliver()


@pytest.mark.parametrize("renewed", [False, True])
def test_a_data_dir_restored_from_a_backup_needs_a_new_incarnation(
    tmp_path: Path, renewed: bool
) -> None:
    """A backup's journal counts from where the copy was, under the same incarnation:
    the cloud has seen those numbers, so the view stays on the original's last report
    (the documented limit). `muto agent run --new-incarnation` makes it a new era."""
    data, backup = tmp_path / "data", tmp_path / "backup"
    plane = ControlPlane.open(memory_settings(tmp_path))
    register_fleet(plane, [registration(AGENT_VEHICLE)])

    def deliver_all(rig: Rig) -> None:
        for body in [r for r in rig.cloud.reports if r["kind"] == "reconcile"]:
            fields = {k: v for k, v in body.items() if k != "kind"}
            report = msgspec.convert(fields, ReconcileReport)
            plane.writer.execute(record_reconcile(report, f"vehicle:{AGENT_VEHICLE}"))
        rig.cloud.reports.clear()
        plane.projector.catch_up()

    async def scenario() -> str | None:
        rig = make_rig(journal=Journal.open(data))
        await rig.agent.start(loop=False)
        await converge(rig, A, 1)  # report 1
        rig.journal.close()
        shutil.copytree(data, backup)  # taken while the agent is down
        rig = again(rig, Journal.open(data))
        await rig.agent.start(loop=False)
        await converge(rig, B, 2)  # report 2
        await converge(rig, C, 3)  # report 3
        deliver_all(rig)
        assert plane.queries.vehicle(AGENT_VEHICLE).running_release == C.key
        rig.journal.close()
        shutil.rmtree(data)
        shutil.copytree(backup, data)  # the disk is replaced by the backup
        rig = again(rig, Journal.open(data), new_incarnation=renewed)
        await rig.agent.start(loop=False)
        await converge(rig, B, 4)  # report 2 of the restored journal
        deliver_all(rig)
        rig.journal.close()
        return plane.queries.vehicle(AGENT_VEHICLE).running_release

    try:
        shown = asyncio.run(scenario())
        assert shown == (B.key if renewed else C.key)
        assert_rebuild_equal(plane)
    finally:
        plane.close()
