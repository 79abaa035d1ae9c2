"""What an operator (or CI) does over the HTTP API, as the demo does it."""

from __future__ import annotations

from typing import Any

import httpx

from muto.domain.desired import Envelope
from muto.domain.wire import to_builtins


class OperatorClient:
    def __init__(self, cloud_url: str, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=cloud_url.rstrip("/"),
            timeout=300.0,  # fleet-wide assignments take minutes on a large, loaded fleet
            headers={"Authorization": f"Bearer {token}"},
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text}")
        return response.json()["data"]

    async def register_release(self, envelope: Envelope) -> Any:
        return await self._call("POST", "/releases", json=to_builtins(envelope))

    async def start_rollout(self, body: dict[str, Any]) -> Any:
        return await self._call("POST", "/rollouts", json=body)

    async def rollout(self, rollout_id: str) -> Any:
        return await self._call("GET", f"/rollouts/{rollout_id}")

    async def assign(self, body: dict[str, Any]) -> Any:
        return await self._call("POST", "/desired-states", json=body)

    async def register_vehicle(self, vehicle_id: str, labels: dict[str, str]) -> Any:
        return await self._call("POST", "/vehicles", json={"vehicleId": vehicle_id,
                                                          "labels": labels})  # fmt: skip

    async def vehicle_token(self, vehicle_id: str) -> str:
        body = {"role": "vehicle", "vehicleId": vehicle_id}
        return str((await self._call("POST", "/tokens", json=body))["token"])

    async def label(self, vehicle_id: str, labels: dict[str, str]) -> Any:
        return await self._call("PATCH", f"/vehicles/{vehicle_id}", json={"labels": labels})

    async def vehicles(self, selector: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {
                "limit": "1000",
                **({"selector": selector} if selector else {}),
                **({"cursor": cursor} if cursor else {}),
            }
            response = await self.http.get("/vehicles", params=params)
            response.raise_for_status()
            body = response.json()
            found.extend(body["data"])
            cursor = body["metadata"]["nextCursor"]
            if cursor is None:
                return found

    async def audit(self, vehicle_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = await self._call(
            "GET", "/audit", params={"vehicleId": vehicle_id, "limit": "1000"}
        )
        return data

    async def aclose(self) -> None:
        await self.http.aclose()
