"""The simulator's shared connections survive agents abandoning requests at any moment:
a 10,000-vehicle fleet stopped fetching because httpcore (1.0.9) keeps a connection in
its pool for ever when the request it was opened for is cancelled before using it
(encode/httpcore#1093), and agents' deadlines cancel requests under load. Here 50
callers share one pool of 10 connections to a loopback server that drops every
connection after its answer (as the cloud drops idle ones), giving up after a random
0-50 ms, for one second: before the fix the pool held 10 dead connections after it and
every later request failed with PoolTimeout."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import httpx

from muto.agent.transport.http import CloudClient
from muto.sim.link import CONNECTIONS, POOLS, FleetTransport, SimCloud


async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One answer (keep-alive, as far as the client knows), then the connection closes."""
    with contextlib.suppress(OSError):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await reader.read(4096)
            if not chunk:
                break
            head += chunk
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
    writer.close()


def test_abandoned_requests_leave_the_pool_whole() -> None:
    async def scenario() -> tuple[int, int]:
        server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        link = FleetTransport()
        abandoned = 0
        timeout = httpx.Timeout(5.0, pool=1.0)
        async with server, httpx.AsyncClient(transport=link, timeout=timeout) as http:

            async def impatient() -> None:
                nonlocal abandoned
                until = time.monotonic() + 1.5
                while time.monotonic() < until:
                    try:
                        async with asyncio.timeout(random.uniform(0, 0.05)):
                            await http.get(url)
                    except TimeoutError:
                        abandoned += 1

            await asyncio.gather(*(impatient() for _ in range(50)))  # all on one pool
            answered = [(await http.get(url)).status_code for _ in range(20)]
        return abandoned, answered.count(200)

    abandoned, answered = asyncio.run(scenario())
    assert abandoned > 100  # the churn did abandon requests at every step
    assert answered == 20


def test_a_vehicle_waits_for_its_turn_outside_its_deadline() -> None:
    """With every connection of its pool busy for longer than the agent's whole-exchange
    deadline, a vehicle's fetch still gets its answer once a connection is free: the wait
    is the simulator's (thousands of vehicles on a few connections), not the network's."""

    async def scenario() -> str:
        link = FleetTransport()
        link.register("car-1", "secret")
        turns = [await link.turn("car-1") for _ in range(CONNECTIONS // POOLS)]  # all busy

        async def free_later() -> None:
            await asyncio.sleep(0.5)
            for turn in turns:
                turn.release()

        async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(respond, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server, httpx.AsyncClient(transport=link) as http:
            client = CloudClient(url, "car-1", "secret", client=http, total_timeout_s=0.2)
            freeing = asyncio.create_task(free_later())
            fetched = await SimCloud(client, link, "car-1").latest(None)
            await freeing
            async with asyncio.timeout(5):  # every turn was given back
                [await link.turn("car-1") for _ in range(CONNECTIONS // POOLS)]
        return getattr(fetched, "why", "")

    assert asyncio.run(scenario()) == "none_assigned"  # the cloud's answer, not "unreachable"
