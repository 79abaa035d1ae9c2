"""Simulated cloud links: one shared HTTP connection pool for thousands of agents, with
a switch that cuts chosen vehicles off the cloud (their requests fail to connect, as
they would in a tunnel or a dead zone)."""

from __future__ import annotations

import asyncio

import httpx

CONNECTIONS = 100


class FleetTransport(httpx.AsyncBaseTransport):
    """Identifies the vehicle by its bearer token and refuses requests of cut vehicles.

    Thousands of agents share one pool: requests wait their turn on a semaphore, never in
    httpcore's pool queue, whose scheduling is quadratic in the queued requests (2,500
    agents per process stalled there and never reached the cloud)."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        )
        self.turns = asyncio.Semaphore(CONNECTIONS)
        self.vehicle_by_auth: dict[str, str] = {}
        self.cut: set[str] = set()
        self.refused = 0

    def register(self, vehicle_id: str, token: str) -> None:
        self.vehicle_by_auth[f"Bearer {token}"] = vehicle_id

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        vehicle = self.vehicle_by_auth.get(request.headers.get("authorization", ""))
        if vehicle in self.cut:
            self.refused += 1
            raise httpx.ConnectError("simulated: link to the cloud is cut", request=request)
        async with self.turns:
            response = await self.inner.handle_async_request(request)
            await response.aread()  # read the body within the turn: frees the connection
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()
