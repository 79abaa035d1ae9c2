"""A PostgreSQL that refuses writes (a primary demoted in a failover, a database set
read-only) gets every write answered 503 `unavailable` naming why, with one warning line
and no traceback, and /readyz answers 503 saying why, so the load balancer stops sending
writes there; writable again, both recover. Before, every write was a 500 `internal` with
a traceback and /readyz stayed 200 (review r1, finding 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api_server import ApiServer, reconcile_body, unique, vehicle_body
from tests.support.services import postgres_admin
from tests.support.waits import eventually

pytestmark = pytest.mark.postgres
READ_ONLY = "the database is read-only or in recovery (a standby)"


def refuse_writes(database: str, refuse: bool) -> None:
    """Set the database read-only (or back), and end its sessions as a failover does
    (waiting until each has ended): the setting holds for new sessions, which the
    server's pools open again."""
    setting = "SET default_transaction_read_only = on" if refuse else "RESET ALL"
    with postgres_admin() as admin:
        admin.execute(f'ALTER DATABASE "{database}" {setting}')
        admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )


def readiness(server: ApiServer) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"{server.url}/readyz", timeout=10)
    return answer.status_code, answer.json()["data"]


def refusing(server: ApiServer) -> tuple[int, dict[str, Any]] | None:
    """/readyz's answer once it names why the process is not ready."""
    status, body = readiness(server)
    return (status, body) if body["failing"] else None


def test_a_database_that_refuses_writes_is_a_503_and_not_ready(
    postgres_url: str, tmp_path: Path
) -> None:
    database = postgres_url.rpartition("/")[2]
    server = ApiServer(tmp_path, postgres_url)
    tokens = server.issue("operator", "car-1")
    server.start(wait="/readyz")
    try:
        with (
            server.client(tokens["operator"][0]) as operator,
            server.client(tokens["car-1"][0]) as vehicle,
        ):
            assert operator.post("/vehicles", json=vehicle_body("car-1")).status_code == 201
            # A first read makes the reported snapshots' table, as in a running deployment.
            assert operator.get("/vehicles").status_code == 200

            refuse_writes(database, True)
            status, body = eventually(
                lambda: refusing(server), "/readyz to say the database refuses writes"
            )
            assert (status, body["status"], body["database"]) == (503, "unavailable", True)
            assert body["failing"] == "the database refuses writes: it is read-only"

            # The first write after the sessions ended may meet a lost link (503 too); then
            # the database's own refusal, named. Never a 500.
            def refused_as_read_only() -> str | None:
                answer = operator.post("/vehicles", json=vehicle_body("car-2"))
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "unavailable"
                message: str = answer.json()["error"]["message"]
                return message if READ_ONLY in message else None

            message = eventually(refused_as_read_only, "a write refused as read-only")
            assert message == f"the store cannot write now: {READ_ONLY}; retry later"
            report = reconcile_body("car-1", unique("r"))  # the fleet's fast lane, the same
            answer = vehicle.post("/reports/reconcile", json=report)
            assert (answer.status_code, answer.json()["error"]["code"]) == (503, "unavailable")
            assert READ_ONLY in answer.json()["error"]["message"]
            assert operator.get("/vehicles").status_code == 200  # reads go on

            refuse_writes(database, False)
            eventually(lambda: readiness(server)[0] == 200, "/readyz to be ready again")
            eventually(
                lambda: operator.post("/vehicles", json=vehicle_body("car-3")).status_code == 201,
                "a write to be stored again",
            )
            assert vehicle.post("/reports/reconcile", json=report).status_code in (200, 201)
            stored = {v["vehicleId"] for v in operator.get("/vehicles").json()["data"]}
            assert stored == {"car-1", "car-3"}  # the refused writes stored nothing
    finally:
        server.stop()
        refuse_writes(database, False)
    log = server.log.read_text()
    assert "the store refused a write on /vehicles: " + READ_ONLY in log
    assert "unhandled error" not in log
    assert not [t for t in server.tracebacks() if "ReadOnlySqlTransaction" in t]
