"""SIGTERM while clients are writing: the server finishes what it acknowledged and exits
0; restarted on the same data, every acknowledged write is there (no lost events)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from tests.faults.runs import full_only
from tests.support.api_server import (
    ApiServer,
    database,
    reconcile_body,
    unique,
    vehicle_body,
)

WRITERS = 4
SIGNAL_AFTER = 40  # acknowledged writes before SIGTERM


class Writers:
    """Threads that register vehicles and report for them until the server goes away;
    they keep what the server acknowledged."""

    def __init__(self, server: ApiServer, secret: str, batch: str) -> None:
        self.server, self.secret, self.batch = server, secret, batch
        self.acknowledged: list[str] = []
        self.reports: list[str] = []
        self.positions: list[int] = []
        self.enough = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(WRITERS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=60)
            assert not thread.is_alive()

    def _write(self, n: int) -> None:
        with self.server.client(self.secret) as http:
            for i in range(10_000):
                vehicle_id = f"{self.batch}-{n}-{i:04d}"
                try:
                    registered = http.post(
                        "/vehicles", json=vehicle_body(vehicle_id, batch=self.batch)
                    )
                    if registered.status_code != 201:
                        return
                    report_id = unique("rep")
                    reported = http.post(
                        "/reports/reconcile", json=reconcile_body(vehicle_id, report_id)
                    )
                except httpx.TransportError:
                    return  # the server stopped accepting
                with self._lock:
                    self.acknowledged.append(vehicle_id)
                    self.positions.append(registered.json()["metadata"]["position"])
                    if reported.status_code == 200:
                        self.reports.append(report_id)
                        self.positions.append(reported.json()["metadata"]["position"])
                    if len(self.acknowledged) >= SIGNAL_AFTER:
                        self.enough.set()


# SQLite (one process, the default deployment) in make test; PostgreSQL's drain is the same
# server code, and its durability under a kill is scenario 3's: make test-faults runs it.
@pytest.mark.parametrize(
    "backend",
    [pytest.param("sqlite"), full_only("postgres", "full-postgres", pytest.mark.postgres)],
)
def test_sigterm_under_load_exits_0_and_loses_nothing(backend: str, tmp_path: Path) -> None:
    with database(backend) as url:
        server = ApiServer(tmp_path / "data", url)
        secret = server.issue("operator")["operator"][0]
        server.start()
        writers = Writers(server, secret, unique("batch"))
        try:
            writers.start()
            assert writers.enough.wait(timeout=120), server.tail()
        finally:
            code = server.stop()  # SIGTERM with writers still writing
            writers.join()
        assert code == 0, server.tail()
        assert server.tracebacks() == []
        assert len(writers.acknowledged) >= SIGNAL_AFTER

        server.start()  # same data dir, same database
        try:
            with server.client(secret) as http:
                health = http.get("/healthz").json()["data"]
                assert health["projectionLag"] == 0
                assert health["position"] >= max(writers.positions)
                stored = http.get(
                    "/vehicles", params={"selector": f"batch={writers.batch}", "limit": 1000}
                ).json()
                ids = {v["vehicleId"] for v in stored["data"]}
                audit = http.get("/audit", params={"limit": 5000}).json()["data"]
        finally:
            assert server.stop() == 0, server.tail()
        assert set(writers.acknowledged) <= ids
        recorded = {
            e["data"]["report"]["reportId"]
            for e in audit
            if e["eventType"] == "Vehicle.ReconcileReported"
        }
        assert set(writers.reports) <= recorded
        positions = [e["position"] for e in audit]
        assert positions == sorted(set(positions))  # one timeline, no duplicates
        assert server.tracebacks() == []
