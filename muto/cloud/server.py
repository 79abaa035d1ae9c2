"""How `muto cloud serve` runs uvicorn: timeouts and a bound on connections.

uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but
arms no timer before a request's head is complete: a client that connects and sends
nothing, or dribbles its headers a byte at a time, held its connection for ever (200
such clients were held for 40 s in the outside review). Its `limit_concurrency` answers
503 only once a request has been read, so it does not bound those either. The protocol
below adds both: a deadline for each request's head, and a cap on open connections.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from muto.cloud.settings import Settings

logger = logging.getLogger("muto.server")


class GuardedH11Protocol(H11Protocol):  # type: ignore[misc]
    """uvicorn's h11 protocol with a head deadline and a connection cap."""

    head_timeout_s: float = 10.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

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

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head()  # the head is in: the request is the app's now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_head()  # keep-alive: the next request gets the same deadline

    def _await_head(self) -> None:
        self._cancel_head()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        logger.info("closed a connection from %s: no request head within %ss", self.client,
                    self.head_timeout_s)  # fmt: skip
        self.transport.close()


def protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with these bounds."""
    return type(
        "Guarded",
        (GuardedH11Protocol,),
        {"head_timeout_s": settings.head_timeout_s, "max_connections": settings.max_connections},
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Every connection bound `muto cloud serve` passes to uvicorn.run."""
    return {
        "http": protocol(settings),
        "timeout_keep_alive": settings.keep_alive_s,
        "h11_max_incomplete_event_size": 16 * 1024,  # a request head: 16 KiB at most
    }
