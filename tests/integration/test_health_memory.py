"""Report ingest's memory of each vehicle's health status: a repeated report that changes
nothing does not go through the writer, and a status is never remembered across a
transition the memory did not see (counted in writer commands)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, register_vehicle
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.cloud.writer import Command, WritePath, Written
from muto.domain.reports import HealthReport
from muto.domain.requests import VehicleRegistration
from muto.domain.wire import convert
from tests.support.api_server import health_body, unique
from tests.support.spine import postgres_settings, sqlite_settings

CAUSE = Cause.of("test")


def writer_commands_per_report(settings: Settings, statuses: list[str]) -> list[int]:
    """Register v1, then POST one health report per status: the writer commands each took."""
    plane = ControlPlane.open(settings)
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    op = {"Authorization": f"Bearer {secret}"}
    counts = []
    try:
        with TestClient(create_app(plane.settings, plane=plane)) as c:
            assert c.post("/vehicles", json={"vehicleId": "v1"}, headers=op).status_code == 201
            for status in statuses:
                heard = echoes(plane)
                before = plane.writer.commands
                body = health_body("v1", unique("h"), status)
                assert c.post("/reports/health", json=body, headers=op).status_code == 200
                counts.append(plane.writer.commands - before)
                if counts[-1]:
                    wait_for_echo(plane, heard)
    finally:
        plane.close()
    return counts


def echoes(plane: ControlPlane) -> int:
    changes = plane.caches.changes
    return changes.heard if changes is not None else 0


def wait_for_echo(plane: ControlPlane, heard: int) -> None:
    """On PostgreSQL, a stored transition comes back as a NOTIFY too: let it arrive, so
    that the next report meets the memory as it will stay."""
    if plane.caches.changes is None:
        return
    deadline = time.monotonic() + 5
    while echoes(plane) == heard and time.monotonic() < deadline:
        time.sleep(0.01)


def test_an_unchanged_report_after_a_transition_skips_the_writer_sqlite(tmp_path: Path) -> None:
    counts = writer_commands_per_report(sqlite_settings(tmp_path), ["degraded"] * 5)
    assert counts == [1, 0, 0, 0, 0]  # remembered after its own transition's eviction


def test_an_unchanged_report_after_a_transition_skips_the_writer_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    counts = writer_commands_per_report(postgres_settings(postgres_url, tmp_path), ["degraded"] * 5)
    # A transition is not remembered on PostgreSQL (its eviction may come at any time,
    # from any process); the next report is written once (no event) and remembered.
    assert counts == [1, 1, 0, 0, 0]


def test_each_transition_goes_through_the_writer(tmp_path: Path) -> None:
    counts = writer_commands_per_report(
        sqlite_settings(tmp_path), ["degraded", "degraded", "healthy", "healthy", "degraded"]
    )
    assert counts == [1, 0, 1, 0, 1]


class TransitionWhileWriting(WritePath):
    """Another transition of the same vehicle is evicted while this write runs."""

    def __init__(self, plane: ControlPlane) -> None:
        super().__init__(plane.writer, plane.projector)
        self.plane = plane

    async def run(self, command: Command[Any], views_timeout: float | None = None) -> Written[Any]:
        written = await super().run(command, views_timeout)
        self.plane.ingest.forget("v1")
        return written


def test_a_status_read_across_another_transition_is_not_remembered(tmp_path: Path) -> None:
    plane = ControlPlane.open(sqlite_settings(tmp_path))
    try:
        plane.execute(register_vehicle(convert({"vehicleId": "v1"}, VehicleRegistration), CAUSE))
        ingest = plane.ingest
        real = ingest.writes
        ingest.writes = TransitionWhileWriting(plane)
        report = convert(health_body("v1", unique("h"), "degraded"), HealthReport)
        asyncio.run(ingest.health(report, "test"))
        ingest.writes = real
        before = plane.writer.commands
        asyncio.run(ingest.health(report, "test"))
        assert plane.writer.commands - before == 1  # not answered from memory
    finally:
        plane.close()
