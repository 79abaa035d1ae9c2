"""The simulator's shared connections (muto/sim/link.py, muto/sim/pool.py) survive agents
abandoning requests at any moment: a 10,000-vehicle fleet stopped fetching when its
HTTP client (httpcore 1.0.9) kept a connection in its pool for ever after the request it
was opened for was cancelled (encode/httpcore#1093), and agents' deadlines cancel
requests under load. The connections are kept alive, bounded per pool, replaced when the
server closes them, and a request that a server's close caught is retried only when
nothing of its answer came."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from muto.agent.transport.exchange import HttpError
from muto.agent.transport.http import CloudClient
from muto.sim.link import CONNECTIONS, POOLS, FleetLink, SimCloud

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def request_head(reader: asyncio.StreamReader) -> bytes | None:
    """A request's head (these requests have no body but a report's, read as well), or
    None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, OSError):
        return None
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def path_of(head: bytes) -> bytes:
    return head.split(b" ", 2)[1]


class Server:
    """A loopback HTTP server whose `handler` serves each connection; counts them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = self.open = self.most_open = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            with contextlib.suppress(OSError):
                await self.handler(reader, writer)
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One answer (keep-alive, as far as the client knows), then the connection closes
    (as the cloud closes idle ones)."""
    if await request_head(reader) is not None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()


async def echo_slowly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keeps the connection alive; answers each request with its own path, the head at
    once and the body after a random 0-20 ms: an exchange abandoned part-way leaves
    bytes of its answer coming on the connection."""
    while (head := await request_head(reader)) is not None:
        path = path_of(head)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(path))
        await writer.drain()
        await asyncio.sleep(random.uniform(0, 0.02))
        writer.write(path)
        await writer.drain()


async def get(link: FleetLink, url: str, vehicle: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {vehicle}"} if vehicle else {}
    async with link.stream("GET", url, headers=headers, timeout_s=5.0) as answer:
        return answer.status_code, b"".join([chunk async for chunk in answer.body])


async def turns_all_free(link: FleetLink, vehicle: str) -> None:
    """Every turn of the vehicle's pool can be taken (none leaked), then given back."""
    async with asyncio.timeout(5):
        turns = [await link.turn(vehicle) for _ in range(CONNECTIONS // POOLS)]
    for turn in turns:
        turn.release()


async def impatient(link: FleetLink, url: str, seconds: float, check: bool) -> tuple[int, int]:
    """Requests for `seconds`, each given up after a random 0-50 ms; how many were
    abandoned and how many answered (each with its own path when `check`)."""
    abandoned = answered = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        path = f"/{random.getrandbits(64)}"
        try:
            async with asyncio.timeout(random.uniform(0, 0.05)):
                status, body = await get(link, url + path)
            assert status == 200 and (not check or body == path.encode())
            answered += 1
        except TimeoutError:
            abandoned += 1
    return abandoned, answered


def test_abandoned_requests_leave_the_pool_whole() -> None:
    """50 callers share one pool of 10 connections to a server that drops every
    connection after its answer, giving up after a random 0-50 ms, for 1.5 s: with
    httpx (httpcore 1.0.9) the pool then held 10 dead connections and every later
    request failed waiting for one."""

    async def scenario() -> tuple[int, int, int]:
        link = FleetLink()
        async with Server(answer_once) as url:
            churn = [impatient(link, url, 1.5, check=False) for _ in range(50)]
            abandoned = sum(a for a, _ in await asyncio.gather(*churn))
            async with asyncio.timeout(5):
                answered = [(await get(link, url))[0] for _ in range(20)]
            await turns_all_free(link, "")
            pool = link.pools[0]
            left = (pool.open, pool.idle)
        await link.aclose()
        return abandoned, answered.count(200), left

    abandoned, answered, (still_open, idle) = asyncio.run(scenario())
    assert abandoned > 100  # the churn did abandon requests at every step
    assert answered == 20
    assert still_open == idle <= CONNECTIONS // POOLS  # no connection lost track of


def test_an_answer_abandoned_part_way_never_reaches_the_next_exchange() -> None:
    """On kept-alive connections, with answers' bodies still coming when their callers
    give up: every answer taken is the one to its own request, and the server never
    sees more connections open than the pool's bound."""

    async def scenario() -> tuple[int, int, tuple[int, int, int, int]]:
        link = FleetLink()
        abandoned = answered = 0
        async with Server(echo_slowly) as url:
            # Rounds of churn until both kinds are many: a slow or busy machine answers
            # few requests within their 0-50 ms (9 in one round, seen on a loaded one).
            for _ in range(20):
                churn = [impatient(link, url, 1.5, check=True) for _ in range(50)]
                for gave_up, got in await asyncio.gather(*churn):
                    abandoned, answered = abandoned + gave_up, answered + got
                if abandoned > 100 and answered > 100:
                    break
            await turns_all_free(link, "")
            pool = link.pools[0]
            seen = (pool.most_open, pool.open, pool.idle, pool.retried)
        await link.aclose()
        return abandoned, answered, seen

    abandoned, answered, (most_open, still_open, idle, retried) = asyncio.run(scenario())
    assert abandoned > 100 and answered > 100  # both, mixed on the same connections
    assert most_open <= CONNECTIONS // POOLS
    assert still_open == idle  # every connection closed or kept, none lost track of
    assert retried == 0  # the server closes none: no exchange met a connection unfit


def test_connections_are_kept_alive() -> None:
    async def scenario() -> tuple[int, int, int]:
        link = FleetLink()
        server = Server(echo_slowly)
        async with server as url:
            bodies = [(await get(link, f"{url}/{i}"))[1] for i in range(20)]
        await link.aclose()
        assert bodies == [f"/{i}".encode() for i in range(20)]
        return server.connections, link.pools[0].opened, link.pools[0].reused

    assert asyncio.run(scenario()) == (1, 1, 19)


def test_a_connection_the_server_closes_is_replaced() -> None:
    """Closed after its answer, with `Connection: close` or silently (an idle keep-alive
    expiring): each next request gets a new connection and its answer, no retry."""

    async def say_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await request_head(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()

    async def scenario(handler: Handler) -> tuple[list[int], int, int]:
        link = FleetLink()
        server = Server(handler)
        async with server as url:
            statuses = []
            for _ in range(5):
                statuses.append((await get(link, url))[0])
                await asyncio.sleep(0.1)  # the close arrives
        await link.aclose()
        return statuses, server.connections, link.pools[0].retried

    assert asyncio.run(scenario(say_close)) == ([200] * 5, 5, 0)
    assert asyncio.run(scenario(answer_once)) == ([200] * 5, 5, 0)


def test_a_request_the_close_caught_is_retried_once_when_nothing_came() -> None:
    """The server answers a connection's first request, then closes it as the next one
    arrives (keep-alive expiring as the request goes out): that request is sent again on
    a new connection, once. Had any of its answer come, it is not resent."""

    def closing_on_second(answer_part: bytes) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await request_head(reader) is None:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            if await request_head(reader) is not None:
                writer.write(answer_part)
                await writer.drain()

        return handler

    async def scenario(answer_part: bytes) -> tuple[object, int, int]:
        link = FleetLink()
        server = Server(closing_on_second(answer_part))
        async with server as url:
            await get(link, url)
            try:
                second: object = (await get(link, url))[0]
            except HttpError as exc:
                second = type(exc)
        await link.aclose()
        return second, server.connections, link.pools[0].retried

    assert asyncio.run(scenario(b"")) == (200, 2, 1)
    partly = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{"  # a head, half a body
    assert asyncio.run(scenario(partly)) == (HttpError, 1, 0)


def test_a_fresh_connection_closed_unanswered_is_not_retried() -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)

    async def scenario() -> tuple[int, int]:
        link = FleetLink()
        server = Server(close_at_once)
        async with server as url:
            with pytest.raises(HttpError):
                await get(link, url)
        await link.aclose()
        return server.connections, link.pools[0].retried

    assert asyncio.run(scenario()) == (1, 0)


def test_pools_are_bounded_and_a_vehicle_stays_in_its_own() -> None:
    """4 connections in 2 pools, 40 vehicles with 5 requests each at once: never more
    than 4 connections open, and each connection serves the vehicles of one pool."""
    served: list[set[bytes]] = []  # per connection, the vehicles it served

    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mine: set[bytes] = set()
        served.append(mine)
        while (head := await request_head(reader)) is not None:
            mine.add(head.split(b"Bearer ")[1].split(b"\r\n")[0])
            await asyncio.sleep(0.005)
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async def scenario() -> tuple[int, dict[str, int]]:
        link = FleetLink(connections=4, pools=2)
        vehicles = [f"car-{i}" for i in range(40)]
        for v in vehicles:
            link.register(v, v)
        server = Server(keep_alive)
        async with server as url:
            requests = [get(link, url, v) for v in vehicles for _ in range(5)]
            statuses = [status for status, _ in await asyncio.gather(*requests)]
        await link.aclose()
        assert statuses == [204] * 200
        return server.most_open, {v: link.pool_of[f"Bearer {v}"] for v in vehicles}

    most_open, pool_of = asyncio.run(scenario())
    assert 2 <= most_open <= 4
    for vehicles in served:
        assert len({pool_of[v.decode()] for v in vehicles}) == 1


def test_a_cut_vehicle_cannot_connect() -> None:
    async def scenario() -> tuple[int, int]:
        link = FleetLink()
        link.register("car-1", "secret")
        link.cut.add("car-1")
        server = Server(answer_once)
        async with server as url:
            client = CloudClient(url, "car-1", "secret", client=link)
            fetched = await SimCloud(client, link, "car-1").latest(None)
            assert getattr(fetched, "why", "") == "unreachable"
            assert "cut" in getattr(fetched, "detail", "")
            await turns_all_free(link, "car-1")  # the turn it waited for was given back
        await link.aclose()
        return link.refused, server.connections

    assert asyncio.run(scenario()) == (1, 0)


def test_a_vehicle_waits_for_its_turn_outside_its_deadline() -> None:
    """With every connection of its pool busy for longer than the agent's whole-exchange
    deadline, a vehicle's fetch still gets its answer once a connection is free: the wait
    is the simulator's (thousands of vehicles on a few connections), not the network's."""

    async def scenario() -> str:
        link = FleetLink()
        link.register("car-1", "secret")
        turns = [await link.turn("car-1") for _ in range(CONNECTIONS // POOLS)]  # all busy

        async def free_later() -> None:
            await asyncio.sleep(0.5)
            for turn in turns:
                turn.release()

        async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await request_head(reader)
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

        async with Server(not_found) as url:
            client = CloudClient(url, "car-1", "secret", client=link, total_timeout_s=0.2)
            freeing = asyncio.create_task(free_later())
            fetched = await SimCloud(client, link, "car-1").latest(None)
            await freeing
            await turns_all_free(link, "car-1")  # every turn was given back
        await link.aclose()
        return getattr(fetched, "why", "")

    assert asyncio.run(scenario()) == "none_assigned"  # the cloud's answer, not "unreachable"
