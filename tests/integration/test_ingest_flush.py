"""The latest-health and heartbeat tables, flushed once a second by report ingest: each
vehicle's newest row replaces its last (SQLite and PostgreSQL), and a flush that fails
keeps its rows for the next one instead of dropping them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.settings import Settings
from muto.domain.reports import HealthReport
from muto.domain.wire import convert, encode, to_builtins
from muto.projections.rows import LatestRows
from tests.support.api_server import health_body, unique
from tests.support.mqtt_watch import open_fleet
from tests.support.spine import postgres_settings


@pytest.fixture
def plane(store_settings: Settings) -> Any:
    cp = open_fleet(store_settings, "v1", "v2")
    yield cp
    cp.close()


def report(vehicle_id: str, status: str = "healthy") -> HealthReport:
    return convert(health_body(vehicle_id, unique("h"), status), HealthReport)


def stored(cp: ControlPlane) -> dict[str, tuple[str, Any]]:
    t = cp.ingest.health_table
    with cp.views.store.reading() as session:
        return {r.vehicle_id: (r.status, r.report) for r in session.execute(select(t))}


def heartbeats(cp: ControlPlane) -> dict[str, float | None]:
    t = cp.ingest.heartbeat_table
    with cp.views.store.reading() as session:
        return {r.vehicle_id: r.heartbeat_s for r in session.execute(select(t))}


def test_each_vehicle_keeps_its_newest_report_and_heartbeat(plane: ControlPlane) -> None:
    first, other = report("v1"), report("v2", "degraded")
    asyncio.run(plane.ingest.health(first, "test"))
    asyncio.run(plane.ingest.health(other, "test"))
    plane.ingest.heartbeat("v1", 5.0)
    plane.ingest.flush()
    newer = report("v1", "degraded")
    asyncio.run(plane.ingest.health(newer, "test"))
    plane.ingest.heartbeat("v1", None)
    plane.ingest.heartbeat("v2", 7.5)
    plane.ingest.flush()
    assert stored(plane) == {
        "v1": ("degraded", to_builtins(newer)),
        "v2": ("degraded", to_builtins(other)),
    }
    assert heartbeats(plane) == {"v1": None, "v2": 7.5}


def test_the_newer_report_is_kept_whatever_offset_it_was_written_in(plane: ControlPlane) -> None:
    newer = convert({**health_body("v1", unique("h")), "observedAt": "2026-12-04T10:00:00Z"},
                    HealthReport)  # fmt: skip
    older = convert(
        {**health_body("v1", unique("h"), "degraded"), "observedAt": "2026-12-04T11:30:00+02:00"},
        HealthReport,
    )  # 09:30 UTC, though its text sorts after the newer one's
    asyncio.run(plane.ingest.health(newer, "test"))
    asyncio.run(plane.ingest.health(older, "test"))
    plane.ingest.flush()
    assert stored(plane)["v1"] == ("healthy", to_builtins(newer))


def to_json(report: HealthReport) -> str:
    return encode(report).decode()


def at(vehicle_id: str, observed_at: str, status: str = "healthy") -> HealthReport:
    return convert({**health_body(vehicle_id, unique("h"), status), "observedAt": observed_at},
                   HealthReport)  # fmt: skip


def test_a_report_older_than_the_one_stored_changes_nothing(plane: ControlPlane) -> None:
    """A late report (an MQTT re-delivery, a vehicle's outbox) flushed after a newer one
    was: the table keeps the newer, by instant (a whole second against a fraction of it,
    another offset)."""
    newer = at("v1", "2026-12-04T10:00:00.5Z")
    asyncio.run(plane.ingest.health(newer, "test"))
    plane.ingest.flush()
    late = ("2026-12-04T09:59:59Z", "2026-12-04T10:00:00Z", "2026-12-04T19:00:00+09:00")
    for observed_at in late:
        asyncio.run(plane.ingest.health(at("v1", observed_at, "degraded"), "test"))
        plane.ingest.flush()
    assert stored(plane)["v1"] == ("healthy", to_builtins(newer))
    newest = at("v1", "2026-12-04T10:00:01Z", "degraded")
    asyncio.run(plane.ingest.health(newest, "test"))
    plane.ingest.flush()
    assert stored(plane)["v1"] == ("degraded", to_builtins(newest))


def test_a_row_stored_in_the_vehicles_offset_is_replaced_by_a_newer_report(
    plane: ControlPlane,
) -> None:
    """Rows stored before times were kept in UTC: 19:00+09:00 is 10:00 UTC, older than
    10:05 UTC though its text sorts after it."""
    old = at("v1", "2026-12-04T19:00:00+09:00")
    row = ("v1", "healthy", "2026-12-04T19:00:00+09:00", to_json(old))
    with plane.views.store.writing() as session:
        LatestRows(plane.ingest.health_table).write(session, [row])
    newer = at("v1", "2026-12-04T10:05:00Z", "degraded")
    asyncio.run(plane.ingest.health(newer, "test"))
    plane.ingest.flush()
    assert stored(plane)["v1"] == ("degraded", to_builtins(newer))


@pytest.mark.postgres
def test_another_process_flushing_an_older_report_changes_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two API processes on one database each took one of a vehicle's reports; the one
    holding the older flushes last."""
    first = open_fleet(postgres_settings(postgres_url, tmp_path / "a"), "v1")
    second = ControlPlane.open(postgres_settings(postgres_url, tmp_path / "b"))
    try:
        newer = at("v1", "2026-12-04T10:00:00Z")
        asyncio.run(first.ingest.health(newer, "test"))
        asyncio.run(second.ingest.health(at("v1", "2026-12-04T09:00:00Z", "degraded"), "test"))
        first.ingest.flush()
        second.ingest.flush()
        assert stored(second)["v1"] == ("healthy", to_builtins(newer))
    finally:
        second.close()
        first.close()


def test_a_failed_flush_keeps_its_rows_for_the_next(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = report("v1")
    asyncio.run(plane.ingest.health(kept, "test"))
    plane.ingest.heartbeat("v2", 3.0)
    real = LatestRows.write

    def refused(self: LatestRows, session: Any, rows: list[tuple[Any, ...]]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(LatestRows, "write", refused)
    with pytest.raises(OSError, match="disk full"):
        plane.ingest.flush()
    monkeypatch.setattr(LatestRows, "write", real)
    plane.ingest.flush()
    assert stored(plane) == {"v1": ("healthy", to_builtins(kept))}
    assert heartbeats(plane) == {"v2": 3.0}
