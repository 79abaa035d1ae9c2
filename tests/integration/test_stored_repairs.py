"""A store written before a bound was added still reads (docs/event-store.md): a
reconcile report stored with a journal number beyond a signed 64-bit integer (accepted
from vehicles until 2026-12-04) once stopped every view behind it. It is now read as a
report without a place, with a warning naming the event, on SQLite and PostgreSQL: the
views catch up and equal a rebuild, the vehicle still loads and takes reports, and the
next report of a real journal is shown."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import record_reconcile
from muto.cloud.settings import Settings
from muto.domain.desired import StackRef
from muto.domain.report_order import MAX_JOURNAL_NUMBER, ReportPlace
from muto.domain.reports import ReconcileReport
from tests.support.spine import (
    postgres_settings,
    reconcile_report,
    register_fleet,
    registration,
    view_rows,
)

VEHICLE = "car-1"


@pytest.fixture
def plane(store_settings: Settings) -> Iterator[ControlPlane]:
    cp = ControlPlane.open(store_settings)
    register_fleet(cp, [registration(VEHICLE)])
    try:
        yield cp
    finally:
        cp.close()


def made(journal: str, number: int, minute: int) -> ReconcileReport:
    """A report placed `number` in `journal`; a Struct built by its constructor is not
    validated, so this stores what the wire accepted before the bound."""
    return reconcile_report(
        VEHICLE,
        f"{journal}-{number}",
        running=StackRef(name="core", version=f"{journal}.{minute}"),
        minute=minute,
        journal=ReportPlace(incarnation=journal, number=number),
    )


def shown(cp: ControlPlane) -> str | None:
    cp.projector.catch_up()
    release = cp.queries.vehicle(VEHICLE).running_release
    return str(release).removeprefix("core@") if release else None


@pytest.mark.parametrize("number", [MAX_JOURNAL_NUMBER + 1, 2**64 - 1, 2**70])
def test_an_out_of_range_journal_number_is_read_as_no_place(
    plane: ControlPlane, number: int, caplog: pytest.LogCaptureFixture
) -> None:
    plane.writer.execute(record_reconcile(made("forged", number, 1), f"vehicle:{VEHICLE}"))
    with caplog.at_level(logging.WARNING, logger="muto.cloud"):
        assert shown(plane) == "forged.1"  # the views are not stopped behind it
    repaired = [r.getMessage() for r in caplog.records if "repaired" in r.getMessage()]
    assert repaired, caplog.text
    assert "Vehicle.ReconcileReported" in repaired[0] and "journal" in repaired[0]

    # A report without a place is older than any placed one: a real journal's next
    # report is shown, whatever its number.
    plane.writer.execute(record_reconcile(made("real", 1, 0), f"vehicle:{VEHICLE}"))
    assert shown(plane) == "real.0"

    # The aggregate loads from the store (not its cache) and keeps taking reports.
    plane.log.repository.cache = None
    plane.writer.execute(record_reconcile(made("real", 2, 2), f"vehicle:{VEHICLE}"))
    assert shown(plane) == "real.2"

    incremental = view_rows(plane.views)
    plane.projector.rebuild("inventory")
    assert view_rows(plane.views) == incremental


def test_a_number_within_the_bound_is_kept(plane: ControlPlane) -> None:
    """The largest number a view stores is read as it was stored, no repair."""
    plane.writer.execute(record_reconcile(made("big", MAX_JOURNAL_NUMBER, 1), "vehicle:car-1"))
    assert shown(plane) == "big.1"
    plane.writer.execute(record_reconcile(made("big", MAX_JOURNAL_NUMBER - 1, 2), "vehicle:car-1"))
    assert shown(plane) == "big.1"  # an older place of the same journal is not shown


@pytest.mark.postgres
def test_a_postgresql_store_from_before_keeps_its_views_and_widens_the_number(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its inventory stored the journal number in 32 bits (a number past 2**31 stopped
    the views), and the audit views their log positions (they would have stopped at the
    2**31st event). Opening it widens those columns in place (no rebuild, rows and
    positions kept), and such a number is then shown."""
    settings = postgres_settings(postgres_url, tmp_path)
    cp = ControlPlane.open(settings)
    register_fleet(cp, [registration(VEHICLE)])
    cp.writer.execute(record_reconcile(made("j", 1, 1), f"vehicle:{VEHICLE}"))
    assert shown(cp) == "j.1"
    before, positions = view_rows(cp.views), cp.projector.positions()
    older = {"view_vehicles": "report_number", "view_audit": "position",
             "view_audit_chain": "position"}  # fmt: skip
    with cp.views.store.engine.begin() as connection:  # the shape of the older release
        for table, column in older.items():
            connection.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE INT"))
    cp.close()
    with caplog.at_level(logging.WARNING, logger="muto.projections"):
        cp = ControlPlane.open(settings)
    try:
        said = [r.getMessage() for r in caplog.records if r.name == "muto.projections"]
        assert sorted(said) == [
            "view audit: widening view_audit.position to 64 bits",
            "view audit_chain: widening view_audit_chain.position to 64 bits",
            "view inventory: widening view_vehicles.report_number to 64 bits",
        ]
        assert cp.projector.positions() == positions
        assert view_rows(cp.views) == before
        cp.writer.execute(record_reconcile(made("j", 2**40, 2), f"vehicle:{VEHICLE}"))
        assert shown(cp) == "j.2"
    finally:
        cp.close()
