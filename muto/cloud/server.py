"""How `muto cloud serve` runs uvicorn: its httptools parser, timeouts and a bound on
connections.

uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but
arms no timer before a request's head is complete: a client that connects and sends
nothing, or dribbles its headers a byte at a time, held its connection for ever (200
such clients were held for 40 s in the outside review). Its `limit_concurrency` answers
503 only once a request has been read, so it does not bound those either. The protocol
below adds both: a deadline for each request's head, and a cap on open connections;
and, since llhttp sets no bound of its own, a request head of MAX_HEAD_BYTES at most.

httptools (llhttp, in C) rather than h11: h11's pure-Python parsing and response
checks were a quarter of the event loop's time per request (docs/api.md).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from muto.cloud.settings import Settings

logger = logging.getLogger("muto.server")
MAX_HEAD_BYTES = 16 * 1024  # a request head: 16 KiB at most


class GuardedProtocol(HttpToolsProtocol):  # type: ignore[misc]
    """uvicorn's httptools protocol with a head deadline, a head size bound and a
    connection cap."""

    head_timeout_s: float = 10.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_since: float | None = None  # loop time a head has been awaited since
        self._head_bytes = 0  # bytes received while a head is awaited
        self._in_body = False  # a request's head is in, the end of its body is not

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning(
                "refused a connection from %s: %d open, the limit is %d",
                *(self.client, len(self.connections) - 1, self.max_connections),
            )
            transport.close()
            return
        self._await_head()
        HeadDeadlines.of(self).watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_since = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        awaiting = self._head_since is not None and not self._in_body
        if awaiting:
            self._head_bytes += len(data)
        super().data_received(data)
        if awaiting and self._head_since is not None and self._head_bytes > MAX_HEAD_BYTES:
            self._head_since = None  # still no complete head after 16 KiB: refused
            self.send_400_response("Invalid HTTP request received.")

    def on_headers_complete(self) -> None:
        self._head_since = None  # the head is in: the request is the app's now
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._await_head()  # answered before its body ended: now the next head's turn

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._serving():
            self._await_head()  # keep-alive: the next request gets the same deadline

    def _serving(self) -> bool:
        """A request's head is in, and its body or its response is not complete (an
        answer sent before the whole body came, as a 413; a pipelined request)."""
        return self._in_body or (self.cycle is not None and not self.cycle.response_complete)

    def _await_head(self) -> None:
        self._head_since = self.loop.time()
        self._head_bytes = 0

    def head_overdue(self, now: float) -> None:
        """Close the connection if its head has been awaited longer than the deadline."""
        since = self._head_since
        if since is None or now - since < self.head_timeout_s:
            return
        self._head_since = None
        if self.transport.is_closing() or self._serving():
            return
        logger.info("closed a connection from %s: no request head within %ss", self.client,
                    self.head_timeout_s)  # fmt: skip
        self.transport.close()


class HeadDeadlines:
    """One timer per server for every connection's head deadline, not a timer per
    request: a `call_later` and its cancel on every keep-alive request were ~3 % of a
    poll's CPU. Every PERIOD (a quarter of the deadline, a second at most) it closes the
    connections whose head is overdue, so a deadline is kept within that much."""

    _servers: weakref.WeakKeyDictionary[Any, HeadDeadlines] = weakref.WeakKeyDictionary()

    def __init__(self, protocol: GuardedProtocol) -> None:
        self.loop = protocol.loop
        self.connections: set[Any] = protocol.connections
        self.period = min(1.0, protocol.head_timeout_s / 4)
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, protocol: GuardedProtocol) -> HeadDeadlines:
        """The server's (one per uvicorn server state, shared by its connections)."""
        found = cls._servers.get(protocol.server_state)
        if found is None:
            found = cls._servers[protocol.server_state] = cls(protocol)
        return found

    def watch(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.period, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, GuardedProtocol):
                connection.head_overdue(now)
        if self.connections:  # idle with no connections: the next one starts it again
            self.watch()


def protocol(settings: Settings) -> type[GuardedProtocol]:
    """The protocol class uvicorn instantiates per connection, with these bounds."""
    return type(
        "Guarded",
        (GuardedProtocol,),
        {"head_timeout_s": settings.head_timeout_s, "max_connections": settings.max_connections},
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Every connection bound `muto cloud serve` passes to uvicorn.run."""
    # No proxy headers: uvicorn would rewrite each request's client address from
    # X-Forwarded-For, and nothing here reads it (the access log names none, limits are
    # per token), so it was a wrapper around every request for nothing.
    return {
        "http": protocol(settings),
        "timeout_keep_alive": settings.keep_alive_s,
        "proxy_headers": False,
    }
