"""An unhealthy vehicle shows why: the reason codes of its last health report beside its
health, in GET /vehicles/{id}, GET /vehicles and the dashboard's fleet and vehicle pages.
A report that changes only the codes is a transition; one that says the same as the last
still skips the writer (the hot path); a rebuild of the views gives the same codes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from tests.support.api_server import unique
from tests.support.waits import eventually

GRAPH = "ROS_GRAPH_DEGRADED"


@dataclass
class Api:
    client: TestClient
    plane: ControlPlane
    op: dict[str, str]

    def health(self, status: str, *codes: str) -> bool:
        body = {
            "schema": "muto.health-report.v1",
            "reportId": unique("h"),
            "vehicleId": "v1",
            "status": status,
            "reasonCodes": list(codes),
            "observedAt": "2026-01-01T00:00:00Z",
        }
        answer = self.client.post("/reports/health", json=body, headers=self.op)
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["data"]["transition"])

    def shown(self, health: str, codes: list[str]) -> dict[str, Any]:
        """GET /vehicles/v1 once it shows `health` and `codes` (the views catch up)."""
        deadline = time.monotonic() + 10
        while True:
            found: dict[str, Any] = self.client.get("/vehicles/v1", headers=self.op).json()["data"]
            if (found["health"], found["healthReasonCodes"]) == (health, codes):
                return found
            assert time.monotonic() < deadline, found
            time.sleep(0.02)


@pytest.fixture
def api(store_settings: Settings) -> Iterator[Api]:
    plane = ControlPlane.open(store_settings)
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    op = {"Authorization": f"Bearer {secret}"}
    try:
        with TestClient(create_app(plane.settings, plane=plane)) as client:
            registered = client.post(
                "/vehicles", json={"vehicleId": "v1", "labels": {"model": "m9"}}, headers=op
            )
            assert registered.status_code == 201
            assert registered.json()["data"]["healthReasonCodes"] == []
            yield Api(client, plane, op)
    finally:
        plane.close()


def test_a_health_reports_codes_show_in_the_vehicle_and_the_list(api: Api) -> None:
    assert api.health("unhealthy", GRAPH)
    api.shown("unhealthy", [GRAPH])
    (listed,) = api.client.get("/vehicles?selector=model%3Dm9", headers=api.op).json()["data"]
    assert (listed["health"], listed["healthReasonCodes"]) == ("unhealthy", [GRAPH])
    # The same status for another reason is news: a transition, and the view follows.
    assert api.health("unhealthy", "CRASH_LOOP_DETECTED")
    api.shown("unhealthy", ["CRASH_LOOP_DETECTED"])
    # Saying the same again is not: no event (the fast lane's unchanged report), while
    # this process hears every change (on PostgreSQL a channel the database has not
    # answered for 3 s, as under a loaded CI, is not trusted and each report is written).
    api.health("unhealthy", "CRASH_LOOP_DETECTED")
    eventually(api.plane.ingest.trusted, "the change channel to be trusted", interval=0.01)
    before = api.plane.writer.commands
    assert not api.health("unhealthy", "CRASH_LOOP_DETECTED")
    assert api.plane.writer.commands == before
    assert api.health("healthy")
    api.shown("healthy", [])
    assert api.health("unhealthy", GRAPH)
    shown = api.shown("unhealthy", [GRAPH])
    for name in api.plane.projector.projections:  # views equal a rebuild
        api.plane.projector.rebuild(name)
    assert api.shown("unhealthy", [GRAPH]) == shown


def test_the_dashboard_says_why_a_vehicle_is_unhealthy(api: Api) -> None:
    api.health("unhealthy", GRAPH)
    api.shown("unhealthy", [GRAPH])
    token = api.op["Authorization"].removeprefix("Bearer ")
    signed = api.client.post(
        "/ui/login",
        data={"token": token, "next": "/ui/"},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    fleet = api.client.get("/ui/")
    assert fleet.status_code == 200
    row = fleet.text.split('data-vehicle="v1"', 1)[1].split("</tr>", 1)[0]
    assert "unhealthy" in row and GRAPH in row
    page = api.client.get("/ui/vehicles/v1")
    health = page.text.split('id="health"', 1)[1].split("</dd>", 1)[0]
    assert "unhealthy" in health and GRAPH in health


def test_a_late_or_repeated_health_report_does_not_flip_the_vehicle_back(api: Api) -> None:
    """The outside review's order: unhealthy (h-1), healthy (h-2), then h-1 delivered
    again (a retry landing late, a broker's redelivery). The cloud shows `healthy`, one
    transition each, and a report the agent said before h-2 changes nothing either."""

    def send(report_id: str, number: int, status: str, *codes: str, journal: str = "a") -> bool:
        body = {
            "schema": "muto.health-report.v1",
            "reportId": report_id,
            "vehicleId": "v1",
            "status": status,
            "reasonCodes": list(codes),
            "observedAt": f"2026-01-01T00:00:{number:02d}Z",
            "journal": {"incarnation": f"inc-{journal}", "number": number},
        }
        answer = api.client.post("/reports/health", json=body, headers=api.op)
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["data"]["transition"])

    h1, h2 = unique("h"), unique("h")
    assert send(h1, 10, "unhealthy", "STACK_NOT_RUNNING")
    assert send(h2, 20, "healthy")
    assert not send(h1, 10, "unhealthy", "STACK_NOT_RUNNING")  # the same report again
    assert not send(unique("h"), 15, "unhealthy", "STACK_NOT_RUNNING")  # said before h-2
    api.shown("healthy", [])
    changes = [
        e["data"]["report"]["reportId"]
        for e in api.client.get("/audit?vehicleId=v1", headers=api.op).json()["data"]
        if e["eventType"] == "Vehicle.HealthChanged"
    ]
    assert changes == [h1, h2]
    # A newer report of the same journal, and one from a new journal (a wiped data
    # dir starts its count again), are news.
    assert send(unique("h"), 21, "degraded", "INSUFFICIENT_DISK")
    api.shown("degraded", ["INSUFFICIENT_DISK"])
    assert send(unique("h"), 2, "healthy", journal="b")
    api.shown("healthy", [])
