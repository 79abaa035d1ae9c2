"""Simulated cloud links: one shared HTTP connection pool for thousands of agents, with
a switch that cuts chosen vehicles off the cloud (their requests fail to connect, as
they would in a tunnel or a dead zone)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator

import httpx

from muto.agent.transport.http import CloudPort, Delivery, Fetched, NotFetched

CONNECTIONS = 100
POOLS = 10  # the connections split into this many pools (a vehicle always uses one)


class Turn:
    """One of a pool's connections, held from the wait's end to the exchange's end."""

    def __init__(self, turns: asyncio.Semaphore) -> None:
        self._turns = turns
        self.handed = False  # to an exchange, which releases it when it ends
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._turns.release()


# The turn the current task already waited for (SimCloud sets it around one exchange).
HELD: contextvars.ContextVar[Turn | None] = contextvars.ContextVar("held_turn", default=None)


class FleetTransport(httpx.AsyncBaseTransport):
    """Identifies the vehicle by its bearer token and refuses requests of cut vehicles.

    Thousands of agents share `CONNECTIONS` connections: requests wait their turn on a
    semaphore, never in httpcore's pool queue, whose scheduling is quadratic in the
    queued requests (2,500 agents per process stalled there and never reached the
    cloud). The connections are split into `POOLS` pools, each vehicle in one: httpcore
    scans every connection of its pool on each request (an idle check with two system
    calls per connection), which with one pool of 100 was a fifth of the simulator's
    time in a 1,000-vehicle rollout.

    Each exchange runs in its own task, which the caller's cancellation does not reach
    (the agent's deadline abandons the exchange, not the connection): httpcore 1.0.9
    leaves a connection in its pool for ever when the request it was made for is
    cancelled before the connection is in use (encode/httpcore#1093). Under load, with
    agents' deadlines expiring, 10,000 vehicles lost every connection of their pools
    that way within a minute of a release, and the fleet stopped fetching."""

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
        self.auth_of: dict[str, str] = {}  # vehicle -> its bearer header
        self.cut: set[str] = set()
        self.refused = 0
        self._exchanges: set[asyncio.Task[httpx.Response]] = set()

    def register(self, vehicle_id: str, token: str) -> None:
        auth = f"Bearer {token}"
        self.vehicle_by_auth[auth] = vehicle_id
        self.auth_of[vehicle_id] = auth
        self.pool_of[auth] = len(self.vehicle_by_auth) % len(self.pools)

    async def turn(self, vehicle_id: str) -> Turn:
        """Wait for one of the vehicle's pool's connections."""
        return await self._turn(self.auth_of.get(vehicle_id, ""))

    async def _turn(self, auth: str) -> Turn:
        turns = self.pools[self.pool_of.get(auth, 0)][1]
        await turns.acquire()
        return Turn(turns)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        vehicle = self.vehicle_by_auth.get(auth)
        if vehicle in self.cut:
            self.refused += 1
            raise httpx.ConnectError("simulated: link to the cloud is cut", request=request)
        inner = self.pools[self.pool_of.get(auth, 0)][0]
        turn = HELD.get() or await self._turn(auth)
        turn.handed = True
        exchange = asyncio.create_task(self._exchange(inner, request, turn))
        self._exchanges.add(exchange)
        exchange.add_done_callback(self._ended)
        return await asyncio.shield(exchange)

    def _ended(self, exchange: asyncio.Task[httpx.Response]) -> None:
        self._exchanges.discard(exchange)
        if not exchange.cancelled():
            exchange.exception()  # seen: an abandoned exchange's failure is nobody's news

    @staticmethod
    async def _exchange(
        inner: httpx.AsyncBaseTransport, request: httpx.Request, turn: Turn
    ) -> httpx.Response:
        try:
            response = await inner.handle_async_request(request)
            await response.aread()  # read the body within the turn: frees the connection
            return response
        finally:
            turn.release()

    async def aclose(self) -> None:
        for inner, _ in self.pools:
            await inner.aclose()


class SimCloud:
    """A simulated vehicle's CloudPort: waits for its turn on the fleet's shared
    connections, then starts the exchange with its own deadlines. A real vehicle has
    its own connection; the wait here is the simulator's, and counted in the agent's
    30 s deadline it made 2,500 agents per process give up a notified fetch and wait for
    their next poll (300 s in the 10,000-vehicle bench)."""

    def __init__(self, inner: CloudPort, link: FleetTransport, vehicle_id: str) -> None:
        self.inner, self.link, self.vehicle_id = inner, link, vehicle_id

    async def latest(self, etag: str | None) -> Fetched | NotFetched:
        async with self._turn():
            return await self.inner.latest(etag)

    async def deliver(self, kind: str, body: bytes) -> tuple[Delivery, str]:
        async with self._turn():
            return await self.inner.deliver(kind, body)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        turn = await self.link.turn(self.vehicle_id)
        held = HELD.set(turn)
        try:
            yield
        finally:
            HELD.reset(held)
            if not turn.handed:  # no exchange started (a cut link): give the turn back
                turn.release()

    async def aclose(self) -> None:
        await self.inner.aclose()
