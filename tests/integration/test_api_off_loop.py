"""No database query runs on the event loop (#14 item 5): the loop serves every request,
so a slow query on it (a heavy selector, a big audit page) delayed /healthz and every
vehicle's poll by its whole duration. Every SQL statement any endpoint causes is
recorded with whether an event loop was running in its thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.api.context import off_loop
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.tokens import Role, issue_token
from muto.projections.store import READERS
from tests.support.releases import signed_release
from tests.support.spine import sqlite_settings


@pytest.fixture
def on_loop() -> Iterator[list[str]]:
    found: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread, the writer's or the projector's: fine
        found.append(" ".join(statement.split())[:100])

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield found
    finally:
        event.remove(Engine, "before_cursor_execute", before)


def test_no_endpoint_queries_the_database_on_the_event_loop(
    tmp_path: Path, on_loop: list[str]
) -> None:
    plane = ControlPlane.open(sqlite_settings(tmp_path))
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    op = {"Authorization": f"Bearer {secret}"}
    try:
        with TestClient(create_app(plane.settings, plane=plane), headers=op) as c:
            calls: list[tuple[str, str, dict[str, Any]]] = [
                ("GET", "/healthz", {}),
                ("POST", "/vehicles", {"json": {"vehicleId": "v1", "labels": {"r": "eu"}}}),
                ("POST", "/vehicles", {"json": {"vehicleId": "v2", "labels": {"r": "eu"}}}),
                ("GET", "/vehicles", {"params": {"selector": "r=eu"}}),
                ("GET", "/vehicles/v1", {}),
                ("PATCH", "/vehicles/v1", {"json": {"labels": {"x": "y"}}}),
                ("POST", "/releases", {"json": signed_release().body()}),
                ("GET", "/releases", {}),
                ("GET", "/releases/core/1.0.0", {}),
                (
                    "POST",
                    "/desired-states",
                    {
                        "json": {
                            "target": {"selector": "x=y"},
                            "stack": {"name": "core", "version": "1.0.0"},
                        }
                    },
                ),
                ("GET", "/desired-states/latest", {"params": {"vehicleId": "v1"}}),
                (
                    "POST",
                    "/reports/reconcile",
                    {
                        "json": {
                            "schema": "muto.reconcile-report.v1",
                            "reportId": "r1",
                            "vehicleId": "v1",
                            "status": "converged",
                            "observedAt": "2026-01-01T00:00:00Z",
                        }
                    },
                ),
                (
                    "POST",
                    "/rollouts",
                    {
                        "json": {
                            "rolloutId": "ro1",
                            "selector": "r=eu",
                            "stack": "core",
                            "version": "1.0.0",
                        }
                    },
                ),
                ("GET", "/rollouts", {}),
                ("GET", "/rollouts/ro1", {}),
                ("POST", "/rollouts/ro1/pause", {}),
                ("POST", "/rollouts/ro1/resume", {}),
                ("POST", "/rollouts/ro1/rollback", {}),
                ("POST", "/tokens", {"json": {"role": "vehicle", "vehicleId": "v2"}}),
                ("GET", "/audit", {"params": {"limit": 5}}),
            ]
            for method, url, kw in calls:
                response = c.request(method, url, **kw)
                assert response.status_code < 300, (method, url, response.text)
            issued = c.post("/tokens", json={"role": "operator"}).json()["data"]
            assert c.post(f"/tokens/{issued['tokenId']}/revoke").status_code == 200
            fresh = {"Authorization": f"Bearer {issued['token']}"}  # never seen: a lookup
            assert c.get("/healthz", headers=fresh).status_code == 200
            assert c.get("/vehicles", headers=fresh).status_code == 401
    finally:
        plane.close()
    assert on_loop == []


def test_reads_take_turns_on_kept_connections(tmp_path: Path) -> None:
    """At most READERS reads run at once, and every one of them finds a kept view
    connection: past the pool's kept ones, each read opened (and set up) a fresh one."""
    plane = ControlPlane.open(sqlite_settings(tmp_path))
    store = plane.views.store
    store.read(select(1))  # the store's own set-up done
    opened: list[int] = []
    event.listen(store.engine, "connect", lambda *_: opened.append(1))
    together = threading.Barrier(READERS, timeout=30)
    running, most = 0, 0
    lock = threading.Lock()

    def read(first: bool) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        if first:
            together.wait()  # READERS of them can run at once
        store.read(select(1))
        time.sleep(0.002)
        with lock:
            running -= 1

    async def fleet() -> None:
        await asyncio.gather(*(off_loop(read, i < READERS) for i in range(20 * READERS)))

    try:
        for _ in range(5):  # bursts, each on a loop of its own (as servers would be)
            asyncio.run(fleet())
    finally:
        plane.close()
    assert most == READERS
    assert len(opened) <= READERS
