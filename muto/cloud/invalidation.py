"""Keeps this process's caches right while other processes write the same PostgreSQL
database: LISTEN on the view store's change channel and tell the local announcers what
changed (a revoked token, a vehicle's new desired state), whichever process projected it.

A cache may only answer from memory while this listener is live: until it has
(re)connected, `live` is False and the caches go to the database for every request;
on each (re)connect every cache is cleared, since changes announced while it was away
were missed. On SQLite there is one process, and the local announcers are enough.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from muto.projections import Views
from muto.projections.base import Announcer
from muto.projections.store import CHANGES_CHANNEL

logger = logging.getLogger("muto.cloud")
RETRY_S = 1.0
# The channel counts as live only if the database answered this recently: a connection
# cut without a FIN (a network partition) delivers nothing and raises nothing for minutes.
STALE_S = 3.0


class ViewChanges:
    def __init__(self, database_url: str, views: Views, reset: Callable[[], None]) -> None:
        self.conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.announcers: dict[str, Announcer] = {
            a.topic: a for projection in views.all for a in projection.announcers
        }
        self.reset = reset
        self.heard = 0  # changes heard since start
        self._live = threading.Event()
        self._answered = 0.0  # monotonic time of the database's last answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="muto-view-changes", daemon=True)

    @property
    def live(self) -> bool:
        return self._live.is_set() and time.monotonic() - self._answered < STALE_S

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; wait (at most `timeout`) until the first LISTEN is in place,
        so that a process serves from its caches only once it hears changes."""
        self._thread.start()
        self._live.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self.reset()  # what changed while nobody listened is unknown
                    self._answered = time.monotonic()
                    self._live.set()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=1.0):
                            self._tell(notify.payload)
                        conn.execute("SELECT 1")  # still there? (see STALE_S)
                        self._answered = time.monotonic()
            except Exception as exc:  # the database went away: caches off until back
                if self._live.is_set():
                    logger.warning("lost the view-change channel: %s", exc)
                self._live.clear()
                self._stop.wait(RETRY_S)
        self._live.clear()

    def _tell(self, payload: str) -> None:
        topic, _, key = payload.partition(" ")
        announcer = self.announcers.get(topic)
        if announcer is not None:
            self.heard += 1
            announcer.tell(key)
