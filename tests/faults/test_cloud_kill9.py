"""Scenario 3: kill -9 the cloud (`muto cloud serve`, a real process on SQLite and
PostgreSQL) while it ingests reports and while its controller moves a rollout.

After each restart: every acknowledged write is stored, a report sent again (as an agent
resends what was not acknowledged) is stored once, the log has no duplicate, the views
equal a full rebuild from the log, and the rollout resumes to `completed` with one
decision per gate and one assignment per vehicle. (The projection killed between its
view update and its commit: test_projection_kill9.py.)
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from tests.faults.cloud import Load, audit, duplicates, views_equal_a_rebuild
from tests.faults.runs import backend_runs
from tests.support.api_server import ApiServer, database
from tests.support.reported_fleet import ReportedFleet

ACKNOWLEDGED_BEFORE_KILL = 30


def kill9(server: ApiServer) -> None:
    assert server.stop(signal.SIGKILL) == -9


# SQLite: the file a killed writer leaves (its journal recovered at the next open).
@pytest.mark.parametrize(("backend", "count"), backend_runs("sqlite", 2, 25))
def test_kill9_during_report_ingest(backend: str, count: int, tmp_path: Path) -> None:
    with database(backend) as url:
        server = ApiServer(tmp_path / "data", url)
        secret = server.issue("operator")["operator"][0]
        load = Load(server, secret)
        for n in range(count):
            server.start()
            load.start(n)
            target = load.count() + ACKNOWLEDGED_BEFORE_KILL
            deadline = time.monotonic() + 120
            while load.count() < target:
                assert time.monotonic() < deadline, server.tail()
                time.sleep(0.01)
            kill9(server)  # writers still writing
            load.join()
        server.start()
        try:
            with server.client(secret) as http:
                assert http.get("/healthz").json()["data"]["projectionLag"] == 0
                load.resend(http)
                entries = audit(http)
                listed = http.get("/vehicles", params={"selector": f"batch={load.batch}",
                                                       "limit": 1000})  # fmt: skip
                vehicles = {v["vehicleId"] for v in listed.json()["data"]}
        finally:
            assert server.stop() == 0, server.tail()
        assert server.tracebacks() == []
        reports = [
            e["data"]["report"]["reportId"]
            for e in entries
            if e["eventType"] == "Vehicle.ReconcileReported"
        ]
        assert duplicates(reports) == []
        assert duplicates([str(e["position"]) for e in entries]) == []
        sent_reports = {b["reportId"] for path, b in load.sent if path == "/reports/reconcile"}
        assert set(reports) >= sent_reports
        sent_vehicles = {b["vehicleId"] for path, b in load.sent if path == "/vehicles"}
        assert vehicles == sent_vehicles
        assert set(load.acknowledged) <= vehicles | set(reports)
        views_equal_a_rebuild(server.settings)
    print(f"\nscenario 3 ingest ({backend}): {count} kills -9, {len(load.sent)} writes sent, "
          f"{len(load.acknowledged)} acknowledged, {len(reports)} reports stored once")  # fmt: skip


def rollout_through_two_kills(server: ApiServer, secret: str, rng: random.Random) -> None:
    """A rollout; the cloud killed -9 after the canaries report and after the wave does
    (a random moment within two controller ticks); each time it resumes."""
    with server.client(secret) as op:
        fleet = ReportedFleet(op)
        rollout_id = fleet.start("2.0.0")["rolloutId"]
        fleet.report_phase(fleet.get(rollout_id), "canary", "2.0.0")
    for phase, then in (("wave", "wave"), ("completed", None)):
        time.sleep(rng.uniform(0, 1.0))
        kill9(server)
        server.start()
        with server.client(secret) as op:
            fleet.op = op
            found = fleet.until(rollout_id, lambda r, p=phase: r["state"] == p)
            if then is not None:
                fleet.report_phase(found, then, "2.0.0")
    with server.client(secret) as op:
        assert [d["event"] for d in found["decisions"]] == [
            "CanaryGatePassed",
            "WaveGatePassed",
            "BakeCompleted",
        ]
        assigned = [
            e["vehicleId"]
            for e in audit(op)
            if e["eventType"] == "Vehicle.DesiredStateAssigned" and e["rolloutId"] == rollout_id
        ]
    assert sorted(assigned) == sorted(fleet.ids)  # one each, none twice


# PostgreSQL: the controller's lease ends with the killed session.
@pytest.mark.parametrize(("backend", "count"), backend_runs("postgres", 1, 10))
def test_kill9_during_a_rollout(backend: str, count: int, tmp_path: Path) -> None:
    rng = random.Random(3)
    with database(backend) as url:
        server = ApiServer(tmp_path / "data", url)
        secret = server.issue("operator")["operator"][0]
        server.start()
        try:
            for _ in range(count):
                rollout_through_two_kills(server, secret, rng)
        finally:
            assert server.stop() == 0, server.tail()
        assert server.tracebacks() == []
        views_equal_a_rebuild(server.settings)
    print(f"\nscenario 3 rollout ({backend}): {count} rollouts, each through 2 kills -9")
