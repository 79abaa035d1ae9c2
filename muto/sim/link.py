"""Simulated cloud links: a few shared, kept-alive HTTP connections for thousands of
agents, with a switch that cuts chosen vehicles off the cloud (their requests fail to
connect, as they would in a tunnel or a dead zone)."""

from __future__ import annotations

import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager

from muto.agent.transport.exchange import Answer, HttpError, Target, redirected
from muto.agent.transport.http import CloudPort, Delivery, Fetched, NotFetched
from muto.sim.pool import Pool, Turn

CONNECTIONS = 100
POOLS = 10  # the connections split into this many pools (a vehicle always uses one)

# The turn the current task already waited for (SimCloud sets it around one exchange).
HELD: contextvars.ContextVar[Turn | None] = contextvars.ContextVar("held_turn", default=None)


class FleetLink:
    """The agents' exchanges (muto/agent/transport/exchange.py's `Exchanges`), all on
    `CONNECTIONS` kept-alive connections split into `POOLS` pools (muto/sim/pool.py), a
    vehicle always in one, known by its bearer token; requests of cut vehicles are
    refused.

    The agent's own h11 connections, kept alive, rather than httpx and httpcore: those
    were 31 % of a simulator process's time in a 1,000-vehicle rollout. Thousands of
    requests wait their turn on a pool's semaphore (httpcore's pool queue scheduled in
    time quadratic in the queued requests: 2,500 agents per process stalled there). A
    caller's cancellation ends its exchange where it is and closes the connection unless
    the exchange had ended cleanly: httpcore 1.0.9 kept a connection in its pool for ever
    when the request it was made for was cancelled before the connection was in use
    (encode/httpcore#1093), and 10,000 vehicles lost every connection that way within a
    minute of a release (tests/integration/test_sim_link.py)."""

    def __init__(
        self,
        connections: int = CONNECTIONS,
        pools: int = POOLS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.pools = [Pool(connections // pools, tls) for _ in range(pools)]
        self.pool_of: dict[str, int] = {}  # bearer header -> its vehicle's pool
        self.vehicle_by_auth: dict[str, str] = {}
        self.auth_of: dict[str, str] = {}  # vehicle -> its bearer header
        self.cut: set[str] = set()
        self.refused = 0

    def register(self, vehicle_id: str, token: str) -> None:
        auth = f"Bearer {token}"
        self.vehicle_by_auth[auth] = vehicle_id
        self.auth_of[vehicle_id] = auth
        self.pool_of[auth] = len(self.vehicle_by_auth) % len(self.pools)

    async def turn(self, vehicle_id: str) -> Turn:
        """Wait for one of the vehicle's pool's connections."""
        return await self.pools[self.pool_of.get(self.auth_of.get(vehicle_id, ""), 0)].turn()

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout_s: float,
        content: bytes = b"",
        follow_redirects: bool = False,
    ) -> AsyncIterator[Answer]:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if self.vehicle_by_auth.get(auth) in self.cut:
            self.refused += 1
            raise HttpError("ConnectError: simulated: link to the cloud is cut")
        pool = self.pools[self.pool_of.get(auth, 0)]
        held = HELD.get()

        def once(target: Target, headers: Mapping[str, str]) -> AbstractAsyncContextManager[Answer]:
            return pool.exchange(method, target, headers, content, timeout_s)

        turn = held or await pool.turn()  # SimCloud's, waited for before the deadline
        try:
            async with redirected(once, url, headers, follow_redirects) as answer:
                yield answer
        finally:
            if held is None:
                turn.release()

    async def aclose(self) -> None:
        for pool in self.pools:
            pool.close()


class SimCloud:
    """A simulated vehicle's CloudPort: waits for its turn on the fleet's shared
    connections, then starts the exchange with its own deadlines. A real vehicle has
    its own connection; the wait here is the simulator's, and counted in the agent's
    30 s deadline it made 2,500 agents per process give up a notified fetch and wait for
    their next poll (300 s in the 10,000-vehicle bench)."""

    def __init__(self, inner: CloudPort, link: FleetLink, vehicle_id: str) -> None:
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
            turn.release()

    async def aclose(self) -> None:
        await self.inner.aclose()
