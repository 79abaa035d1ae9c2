"""Every PostgreSQL advisory lock muto takes, and the one way a duty is held.

All keys live here so that two uses can never collide again: the notifier's lease and
the rollout-start lock once shared a key, and the notifier, which holds its lease for
as long as it runs, blocked every `POST /rollouts` of its deployment for ever.

Two kinds of lock:
- turns (`pg_advisory_lock` / `pg_advisory_xact_lock`, held for one request or one
  batch): writers on several processes take turns;
- duties (`Lease`: `pg_try_advisory_lock` on a connection of its own, held while the
  process lives): one process of a deployment does the work, the others stand by and
  take over when its session ends (a killed process's connection closes, PostgreSQL
  ends the session and releases its locks).

Lives beside the view store (the projector's lock is one of them); SQLite deployments
have one process, so every lease is held at once there.
"""

from __future__ import annotations

import enum
import logging
import threading
from typing import Any

from sqlalchemy import Engine, text

logger = logging.getLogger("muto.locks")
BASE = 0x6D75746F  # "muto"


@enum.unique
class Lock(enum.IntEnum):
    """Advisory lock keys (one bigint key space per database). The first three values
    are those earlier releases used, so that during a rolling upgrade old and new
    processes still exclude each other."""

    # Turns
    PROJECTING = BASE  # one projection batch (transaction lock)
    ROLLOUT_START = BASE + 3  # a rollout's overlap check and its write (one request)
    # Duties (leases)
    CONTROLLER = BASE + 1  # the rollout controller acts on gates
    NOTIFIER = BASE + 2  # publishes desired/notify in log order
    PROJECTOR = BASE + 4  # follows the log in the background
    LISTENER = BASE + 5  # holds the cloud's MQTT session (reports, presence)


DUTIES = (Lock.PROJECTOR, Lock.CONTROLLER, Lock.NOTIFIER, Lock.LISTENER)

# A holder whose host dies (or is cut off) sends nothing more: without probes the server
# keeps its session, and the duty with it, until the OS gives up after hours. With these
# the server ends the session within ~4 s (2 s idle + 2 unanswered 1 s probes; a send
# unacknowledged for 4 s), and the standby takes over at its next try. Ignored on a
# Unix socket, whose peer cannot vanish without the kernel knowing.
HOLDER_KEEPALIVE = {
    "tcp_keepalives_idle": "2",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "2",
    "tcp_user_timeout": "4000",  # ms
}
_KEEPALIVE = text(
    "SELECT " + ", ".join(f"set_config('{name}', :{name}, false)" for name in HOLDER_KEEPALIVE)
)


class Lease:
    """A duty held by this process: `held()` says, before each act, whether it may act.

    It takes the lock when free and, once held, checks on each call that the session
    holding it is still alive: a lease whose connection broke (the database restarted,
    the session was terminated) is dropped at once, and the next call tries again on a
    new connection. A process that loses its lease therefore stops acting before its
    next act, not at some later sweep. On SQLite (one process) it is always held.
    """

    def __init__(self, engine: Engine, duty: Lock) -> None:
        self.engine = engine
        self.duty = duty
        self.shared = engine.dialect.name == "postgresql"
        self._connection: Any = None
        # The holding session's own driver connection: `held` checks it directly, so a
        # broken one is found as such (SQLAlchemy could hand out a new one instead).
        self._driver: Any = None
        self._lock = threading.Lock()

    def held(self) -> bool:
        if not self.shared:
            return True
        with self._lock:
            if self._connection is not None:
                try:
                    # One round trip on the driver's autocommit connection: through
                    # SQLAlchemy (BEGIN, SELECT, COMMIT) the check cost ~175 µs of CPU,
                    # and the following projector checks before each look, ten a second.
                    self._driver.execute("SELECT 1")
                    return True
                except Exception as exc:  # the session is gone, and the lock with it
                    logger.warning("lost the %s lease: %s", self.duty.name.lower(), exc)
                    self._drop()
            return self._take()

    def _take(self) -> bool:
        try:
            connection = self.engine.connect()
        except Exception:
            return False  # the database is unreachable: nobody can act, neither can we
        try:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": int(self.duty)}
            ).scalar()
            connection.commit()
        except Exception:
            connection.invalidate()
            connection.close()
            return False
        if not got:
            connection.close()
            return False
        try:
            connection.execute(_KEEPALIVE, HOLDER_KEEPALIVE)
            connection.commit()
            driver: Any = connection.connection.driver_connection
            driver.autocommit = True  # see `held`
            self._driver = driver
        except Exception:
            connection.invalidate()  # the lock goes with the session
            connection.close()
            return False
        logger.info("took the %s lease", self.duty.name.lower())
        self._connection = connection
        return True

    def _drop(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            try:
                connection.invalidate()  # never back to the pool: its session held the lock
                connection.close()
            except Exception:
                pass

    @property
    def holding(self) -> bool:
        """Held as of the last `held()` and not released since (no database round trip):
        for /readyz. A duty checked only while it acts is released when it stops acting
        (the notifier's, with its bridge session), so this is not left saying held."""
        return not self.shared or self._connection is not None

    def release(self) -> None:
        """Give the duty up (the standby takes it at its next try); a no-op unless held."""
        with self._lock:
            if self._connection is not None:
                logger.info("released the %s lease", self.duty.name.lower())
            self._drop()
