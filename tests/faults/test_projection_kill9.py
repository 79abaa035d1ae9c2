"""Scenario 3, the projector: SIGKILL inside its transaction, after the views were
updated and before the commit (tests/faults/projection_killer.py), on SQLite and
PostgreSQL. The event is in the log; the views and the positions are as they were
before (all or nothing); the restarted cloud projects the event once, and its views
equal a full rebuild from the log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from muto.cloud.eventlog import EventLog
from muto.projections import Views
from muto.projections.store import ViewStore
from tests.faults.cloud import audit, views_equal_a_rebuild
from tests.faults.runs import backend_runs
from tests.support.api_server import ApiServer, database
from tests.support.spine import table_rows

ROOT = Path(__file__).resolve().parents[2]


def kill_the_projector(server: ApiServer, vehicle_id: str) -> None:
    args = [str(server.data_dir), server.database_url or "", vehicle_id]
    done = subprocess.run(
        [sys.executable, "-m", "tests.faults.projection_killer", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr.decode()[-2000:]


def stored_but_not_projected(server: ApiServer, vehicle_id: str) -> None:
    log = EventLog.open(server.settings)
    views = Views(ViewStore(server.settings.views_url))
    try:
        positions = {p.name: views.store.position_of(p.name) for p in views.all}
        assert set(positions.values()) == {log.position() - 1}, positions
        rows = table_rows(views, views.inventory.tables[0])
        assert vehicle_id not in {row["vehicle_id"] for row in rows}
    finally:
        views.store.close()
        log.close()


# PostgreSQL: the server rolls back the killed session's open transaction.
@pytest.mark.parametrize(("backend", "count"), backend_runs("postgres", 1, 20))
def test_kill9_between_view_update_and_commit(backend: str, count: int, tmp_path: Path) -> None:
    with database(backend) as url:
        server = ApiServer(tmp_path / "data", url)
        secret = server.issue("operator")["operator"][0]
        victims = [f"veh-killed-{n}" for n in range(count)]
        for vehicle_id in victims:
            kill_the_projector(server, vehicle_id)
            stored_but_not_projected(server, vehicle_id)
        server.start()
        try:
            with server.client(secret) as http:
                for vehicle_id in victims:
                    assert http.get(f"/vehicles/{vehicle_id}").status_code == 200
                registered = [
                    e["vehicleId"] for e in audit(http) if e["eventType"] == "Vehicle.Registered"
                ]
        finally:
            assert server.stop() == 0, server.tail()
        assert registered == victims  # once each, in order
        views_equal_a_rebuild(server.settings)
    print(f"\nscenario 3 projector ({backend}): {count} kills -9 between update and commit")
