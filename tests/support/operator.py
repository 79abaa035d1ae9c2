"""An operator's HTTP client for tests against a real cloud process: register vehicles
and their tokens, publish signed releases, assign them, read what was reported."""

from __future__ import annotations

from typing import Any

import httpx

from muto.domain.release import StackRelease
from muto.trust import Signer
from tests.support.releases import signed


class Operator:
    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=30,
                                      headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.http.request(method, path, json=body)
        assert response.status_code == status, response.text
        body = response.json()
        return body["data"] if status < 400 else body["error"]["code"]

    async def publish(self, release: StackRelease, signer: Signer, status: int = 201) -> Any:
        return await self.call("POST", "/releases", signed(release, signer).body(),
                               status)  # fmt: skip

    async def reported(self, vehicle_id: str, revision: str | None) -> list[tuple[str, list[str]]]:
        """The reconcile reports the cloud stored for one revision (None: under none)."""
        entries = await self.call("GET", f"/audit?vehicleId={vehicle_id}&limit=5000")
        reports = [e["data"]["report"] for e in entries
                   if e["eventType"] == "Vehicle.ReconcileReported"]  # fmt: skip
        return [(r["status"], r["reasonCodes"]) for r in reports
                if r["desiredStateRevision"] == revision]  # fmt: skip

    async def vehicle(self, vehicle_id: str) -> str:
        """Register a vehicle; its token."""
        await self.call("POST", "/vehicles", {"vehicleId": vehicle_id,
                                              "labels": {"vehicle": vehicle_id}}, 201)  # fmt: skip
        body = {"role": "vehicle", "vehicleId": vehicle_id}
        token: str = (await self.call("POST", "/tokens", body, 201))["token"]
        return token

    async def desire(self, vehicle_id: str, release: StackRelease) -> str:
        stack = {"name": release.stack_name, "version": release.version}
        body = {"target": {"selector": f"vehicle={vehicle_id}"}, "stack": stack}
        found: str = (await self.call("POST", "/desired-states", body, 201))["desiredStateRevision"]
        return found
