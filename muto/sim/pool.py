"""A pool of kept-alive HTTP/1.1 connections (the agent's own h11 connections, exchange.py)
shared by many simulated vehicles: at most `size` connections open, each exchange on one
of them at a time, taken turn by turn."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from muto.agent.transport.exchange import Answer, Http11, HttpError, Stalled, Target
from muto.agent.transport.tls import client_tls

# The cloud closes a connection idle for 5 s (muto/cloud/settings.py, keep_alive_s); one
# idle for longer than this here is closed rather than reused: a request sent as the
# server closes is lost (and retried once, see `Pool.exchange`).
MAX_IDLE_S = 3.0

Origin = tuple[bool, str, int]


class Turn:
    """One of a pool's connections, held from the wait's end to the exchange's end."""

    def __init__(self, turns: asyncio.Semaphore) -> None:
        self._turns = turns
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._turns.release()


class Pool:
    """Kept-alive connections, at most `size` open: whoever holds one of the `size` turns
    takes the connection last given back (the others grow idle and are closed) or opens
    one. A connection goes back to the pool only when its exchange ended cleanly; one
    whose exchange was abandoned part-way (a caller's deadline, a read left unfinished
    with bytes still coming) is closed, so no cancellation leaves a half-read answer on
    a connection that a later exchange would take."""

    def __init__(self, size: int, tls: ssl.SSLContext | None = None) -> None:
        self.size = size
        self._tls = tls
        self._turns = asyncio.Semaphore(size)
        self._idle: list[tuple[float, Origin, Http11]] = []  # last given back last
        self.open = self.most_open = 0  # connections open now, and at most
        self.opened = self.reused = self.retried = 0  # counts, for tests and diagnosis

    async def turn(self) -> Turn:
        await self._turns.acquire()
        return Turn(self._turns)

    @asynccontextmanager
    async def exchange(
        self,
        method: str,
        target: Target,
        headers: Mapping[str, str],
        content: bytes,
        timeout_s: float,
    ) -> AsyncIterator[Answer]:
        """One exchange, for a caller that holds one of this pool's turns. On a kept-alive
        connection that turns out closed by the server before any byte of the answer came
        (it closed it idle as the request went out), the request is sent once more on a
        new connection: the server did not answer it, and a report resent is one the
        courier would resend anyway (the cloud keeps each report id once)."""
        origin = (target.https, target.host, target.port)
        connection = self._kept(origin)
        while True:
            reused = connection is not None
            if connection is None:
                connection = await self._open(target, timeout_s)
            try:
                answer = await connection.send(
                    method, target, headers, content, timeout_s, keep_alive=True
                )
            except HttpError as exc:
                self._close(connection)
                if reused and not connection.answered and not isinstance(exc, Stalled):
                    self.retried += 1
                    connection = None
                    continue
                raise
            except BaseException:
                self._close(connection)
                raise
            break
        try:
            yield answer
        finally:
            self._give_back(origin, connection)

    async def _open(self, target: Target, timeout_s: float) -> Http11:
        connection = await Http11.open(target, self._tls or client_tls(), timeout_s)
        self.opened += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        return connection

    def _close(self, connection: Http11) -> None:
        connection.close()
        self.open -= 1

    def _kept(self, origin: Origin) -> Http11 | None:
        """The connection last given back for `origin`, if still fit; closes those grown
        idle (the oldest first in the list) and, to stay within `size`, any kept for
        another origin."""
        now = time.monotonic()
        while self._idle and now - self._idle[0][0] > MAX_IDLE_S:
            self._close(self._idle.pop(0)[2])
        while self._idle:
            _, kept_for, connection = self._idle.pop()
            if kept_for == origin and not connection.gone():
                self.reused += 1
                return connection
            self._close(connection)
        return None

    def _give_back(self, origin: Origin, connection: Http11) -> None:
        if connection.reusable():
            self._idle.append((time.monotonic(), origin, connection))
        else:
            self._close(connection)

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        while self._idle:
            self._close(self._idle.pop()[2])
