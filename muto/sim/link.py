"""Simulated cloud links: one shared HTTP connection pool for thousands of agents, with
a switch that cuts chosen vehicles off the cloud (their requests fail to connect, as
they would in a tunnel or a dead zone)."""

from __future__ import annotations

import asyncio

import httpx

CONNECTIONS = 100
POOLS = 10  # the connections split into this many pools (a vehicle always uses one)


class FleetTransport(httpx.AsyncBaseTransport):
    """Identifies the vehicle by its bearer token and refuses requests of cut vehicles.

    Thousands of agents share `CONNECTIONS` connections: requests wait their turn on a
    semaphore, never in httpcore's pool queue, whose scheduling is quadratic in the
    queued requests (2,500 agents per process stalled there and never reached the
    cloud). The connections are split into `POOLS` pools, each vehicle in one: httpcore
    scans every connection of its pool on each request (an idle check with two system
    calls per connection), which with one pool of 100 was a fifth of the simulator's
    time in a 1,000-vehicle rollout."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        size = CONNECTIONS // POOLS
        self.pools: list[tuple[httpx.AsyncBaseTransport, asyncio.Semaphore]] = (
            [(inner, asyncio.Semaphore(CONNECTIONS))]
            if inner is not None
            else [
                (
                    httpx.AsyncHTTPTransport(
                        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size)
                    ),
                    asyncio.Semaphore(size),
                )
                for _ in range(POOLS)
            ]
        )
        self.pool_of: dict[str, int] = {}  # bearer header -> its vehicle's pool
        self.vehicle_by_auth: dict[str, str] = {}
        self.cut: set[str] = set()
        self.refused = 0

    def register(self, vehicle_id: str, token: str) -> None:
        auth = f"Bearer {token}"
        self.vehicle_by_auth[auth] = vehicle_id
        self.pool_of[auth] = len(self.vehicle_by_auth) % len(self.pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        vehicle = self.vehicle_by_auth.get(auth)
        if vehicle in self.cut:
            self.refused += 1
            raise httpx.ConnectError("simulated: link to the cloud is cut", request=request)
        inner, turns = self.pools[self.pool_of.get(auth, 0)]
        async with turns:
            response = await inner.handle_async_request(request)
            await response.aread()  # read the body within the turn: frees the connection
            return response

    async def aclose(self) -> None:
        for inner, _ in self.pools:
            await inner.aclose()
