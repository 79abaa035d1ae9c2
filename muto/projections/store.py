"""The view store: SQL read models and each projection's position, in one database.

It is the library's SQLAlchemyTrackingRecorder, so recording a position twice raises
IntegrityError, and view rows plus position commit in one transaction: a crash between
the update and the commit leaves both as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from eventsourcing_sqlalchemy.recorders import SQLAlchemyTrackingRecorder
from sqlalchemy import (
    Engine,
    Executable,
    MetaData,
    Row,
    bindparam,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from muto.projections.locks import Lock

if TYPE_CHECKING:
    from muto.projections.base import Projection

logger = logging.getLogger("muto.projections")
TRACKING_TABLE = "muto_projection_tracking"
# PostgreSQL NOTIFY channel: `<topic> <key>` for each change an in-process cache must
# hear (projections.base.Announcer), published in the transaction that makes it.
CHANGES_CHANNEL = "muto_view_changes"
# Reads that may run at once (the API's worker threads take turns for these), and the
# view connections kept open: one per reader plus the projector, controller, notifier,
# listener and leases. A connection past the kept ones is closed when it is returned,
# and a fresh SQLite connection's set-up was 7 % of the cloud's CPU in a rollout.
READERS = 8
KEPT_CONNECTIONS = READERS + 4
MORE_UNDER_LOAD = 8


class ViewStore(SQLAlchemyTrackingRecorder):
    def __init__(self, url: str) -> None:
        in_memory = ":memory:" in url or "mode=memory" in url  # one shared connection
        pool: dict[str, Any] = (
            {} if in_memory else {"pool_size": KEPT_CONNECTIONS, "max_overflow": MORE_UNDER_LOAD}
        )
        super().__init__(SQLAlchemyDatastore(url=url, **pool), tracking_table_name=TRACKING_TABLE)
        self.metadata = MetaData()
        engine = self.datastore.engine
        assert isinstance(engine, Engine)
        self.engine = engine
        self.is_postgres = self.engine.dialect.name == "postgresql"
        if self.engine.dialect.name == "sqlite" and self.datastore.is_sqlite_filedb:
            event.listen(self.engine, "connect", _derived_durability)
        self._reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        t = self.tracking_table
        self._positions = select(t.c.application_name, t.c.notification_id).where(
            t.c.application_name.in_(bindparam("names", expanding=True))
        )
        self._insert_position = t.insert()
        self._move_position = (
            update(t)
            .where(
                t.c.application_name == bindparam("name"), t.c.notification_id == bindparam("seen")
            )
            .values(notification_id=bindparam("to"))
        )

    def create_table(self) -> None:
        super().create_table()
        self.metadata.create_all(self.engine, checkfirst=True)

    def reshape(self, projections: Iterable[Projection]) -> list[str]:
        """Views are derived: one whose stored columns differ from its definition (an
        upgrade added one) is dropped with its position, and catch-up rebuilds it from
        the log. Returns the names rebuilt."""
        reshaped = []
        with self.writing() as session:
            connection = session.connection()
            found = inspect(connection)
            for projection in projections:
                stale = [
                    table.name
                    for table in projection.tables
                    if found.has_table(table.name)
                    and {c["name"] for c in found.get_columns(table.name)} != set(table.c.keys())
                ]
                if not stale:
                    continue
                logger.warning("view %s changed shape (%s): rebuilding it from the log",
                               projection.name, ", ".join(stale))  # fmt: skip
                for table in reversed(projection.tables):
                    table.drop(connection, checkfirst=True)
                self.forget_position(session, projection.name)
                reshaped.append(projection.name)
            if reshaped:
                self.metadata.create_all(connection, checkfirst=True)
        return reshaped

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction; on PostgreSQL it first takes the projector lock, so
        projectors in several API processes take turns instead of double-applying."""
        with self.transaction(commit=True) as session:
            if self.is_postgres:
                session.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(Lock.PROJECTING)}
                )
            yield session

    def announce(self, session: Session, changes: list[str]) -> None:
        """Publish changes on CHANGES_CHANNEL, delivered when `session` commits (and
        never if it rolls back). PostgreSQL only."""
        if changes:
            session.execute(
                text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:changes AS text[])) AS p"),
                {"channel": CHANGES_CHANNEL, "changes": changes},
            )

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self.transaction(commit=False) as session:
            yield session

    def read(self, statement: Executable, params: dict[str, Any] | None = None) -> list[Row[Any]]:
        """One prebuilt SELECT on an autocommit connection: no ORM session and, on
        PostgreSQL, one round trip instead of BEGIN, SELECT, ROLLBACK. For the hot,
        single-statement reads (a poll, a token); several reads that must agree use
        `reading()`."""
        with self._reads.connect() as connection:
            return list(connection.execute(statement, params or {}))

    def record_position(self, session: Session, projection: str, position: int) -> None:
        self._insert_tracking(
            session, Tracking(application_name=projection, notification_id=position)
        )

    def position_of(self, projection: str) -> int:
        return self.max_tracking_id(projection) or 0

    # The projector's hot path reads and moves every position once per batch. Through
    # the library's ORM queries that was two queries per projection per batch (a third
    # of the cloud's CPU under load, measured with py-spy); these are the same rows,
    # read in one query and moved with a compare-and-set.

    def positions(self, session: Session, names: Iterable[str]) -> dict[str, int]:
        found = session.connection().execute(self._positions, {"names": list(names)})
        known = {row.application_name: row.notification_id for row in found}
        return {name: known.get(name, 0) for name in names}

    def advance(self, session: Session, projection: str, seen: int, position: int) -> None:
        """Move a position from `seen` to `position`; IntegrityError if another projector
        moved it since it was read (nothing is applied twice)."""
        connection = session.connection()
        if seen == 0:
            connection.execute(
                self._insert_position, {"application_name": projection, "notification_id": position}
            )
            return
        moved = connection.execute(
            self._move_position, {"name": projection, "seen": seen, "to": position}
        )
        if moved.rowcount != 1:
            raise IntegrityError(f"{projection} is no longer at {seen}")

    def forget_position(self, session: Session, projection: str) -> None:
        session.query(self.tracking_record_cls).filter_by(application_name=projection).delete()

    def close(self) -> None:
        self.engine.dispose()


def _derived_durability(connection: Any, _: Any) -> None:
    """Views are derived: on SQLite (WAL) a view commit need not wait for the disk
    (synchronous=NORMAL). A power cut can lose the last view transactions, never part
    of one; their positions go with them, and catch-up applies those events again. The
    event log itself keeps synchronous=FULL: a write acknowledged is on disk."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def rows(result: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in result]
