"""Rollouts through the real server's API with vehicles that exist only as the reports
a test posts for them (no agents): four vehicles of one group in two region-model
groups, running `stack@1.0.0`, with releases 2.0.0 and 3.0.0 registered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.support.api_server import reconcile_body, unique, vehicle_body
from tests.support.releases import release_envelope, signed_payload
from tests.support.waits import eventually

FLEET = ["eu-1", "eu-2", "us-1", "us-2"]  # two region-model groups of two


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


class ReportedFleet:
    """Four vehicles of one group, running `stack@1.0.0`, with releases 2.0.0, 3.0.0."""

    def __init__(self, op: httpx.Client) -> None:
        self.op = op
        self.group = unique("g")
        self.stack = unique("stack")
        self.ids = [f"{self.group}-{v}" for v in FLEET]
        for vehicle_id in self.ids:
            ok(self.op.post("/vehicles", json=self.body(vehicle_id)), 201)
        for version in ("1.0.0", "2.0.0", "3.0.0"):
            ok(self.op.post("/releases", json=release_envelope(self.stack, version)), 201)
        assigned = ok(
            self.op.post(
                "/desired-states",
                json={
                    "target": {"selector": f"group={self.group}"},
                    "stack": {"name": self.stack, "version": "1.0.0"},
                },
            ),
            201,
        )
        self.converge(self.ids, assigned["desiredStateRevision"], "1.0.0")

    def body(self, vehicle_id: str) -> dict[str, Any]:
        region = vehicle_id.rsplit("-", 2)[-2]
        return vehicle_body(vehicle_id, region=region, group=self.group)

    def converge(self, vehicle_ids: list[str], revision: str | None, version: str) -> None:
        for vehicle_id in vehicle_ids:
            report = reconcile_body(
                vehicle_id, unique("r"), revision=revision, running=(self.stack, version)
            )
            assert ok(self.op.post("/reports/reconcile", json=report))["recorded"] is True

    def start(self, version: str) -> dict[str, Any]:
        body = {
            "rolloutId": unique("ro"),
            "selector": f"group={self.group}",
            "stack": self.stack,
            "version": version,
            "thresholds": {"bakeSec": 1},  # completed a second after the wave gate passes
        }
        started: dict[str, Any] = ok(self.op.post("/rollouts", json=body), 201)
        return started

    def get(self, rollout_id: str) -> dict[str, Any]:
        found: dict[str, Any] = ok(self.op.get(f"/rollouts/{rollout_id}"))
        return found

    def report_phase(self, rollout: dict[str, Any], phase: str, version: str) -> None:
        for member in rollout["vehicles"]:
            if member["phase"] == phase:
                self.converge([member["vehicleId"]], member["revision"], version)

    def running_version(self, vehicle_id: str) -> str:
        bundle = ok(self.op.get("/desired-states/latest", params={"vehicleId": vehicle_id}))
        version: str = signed_payload(bundle["desiredState"])["stack"]["version"]
        return version

    def until(self, rollout_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The rollout once `done` holds: the controller (a loop in the server) acted."""
        seen: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            nonlocal seen
            seen = self.get(rollout_id)
            return seen if done(seen) else None

        found: dict[str, Any] = eventually(check, lambda: f"rollout {rollout_id}: {seen}")
        return found
