"""The event log's recorder: `eventsourcing_sqlalchemy`'s application recorder, with its
two hot paths written for speed.

The library's recorder inserts through the ORM (a mapped object per event, a unit-of-work
flush) and reads notifications through ORM queries; measured with cProfile, that was
most of an append's CPU and a third of a catch-up's read. Here a save in a transaction
of its own (every `EventLog.save`) runs on the driver's connection, taken from
SQLAlchemy's pool without a Session: on SQLite one executemany and a COMMIT; on
PostgreSQL one pipeline (psycopg 3), a single round trip: BEGIN, the library's table
lock (notification ids in commit order) with its NOTIFY (delivered at commit), one
INSERT ... RETURNING of every row, and COMMIT. A read is one prebuilt SELECT. A save
inside a caller's session keeps the Core statements below (`_insert_stored_events`).
Everything else is the library's: the tables (muto_events, muto_snapshots, same
columns, same encoding, so stores written before open unchanged), its SQLite write
lock, its error mapping (a duplicate aggregate version is its IntegrityError).

One addition, `read_versions` (passed through `EventLog.save`): the version each
aggregate had when the writer read it from its cache. They are checked inside the
save's transaction, after the insert (so under the write lock on either database):
if another process has stored events for any of them since, the save raises
IntegrityError and rolls back, and the writer reloads and decides again. A cached
aggregate is thereby validated once per batch, in one query (none when the batch adds
events to every aggregate it read: the unique version index checks those), instead of
fast-forwarded with a query per command; and a command that decided to store nothing
is checked too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification, PersistenceError, StoredEvent
from eventsourcing_sqlalchemy.datastore import exception_classes, transactions
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy import Engine, Table, bindparam, func, select, text
from sqlalchemy.orm import Session


class EventRecorder(SQLAlchemyApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        table: Table = self.events_record_cls.__table__
        engine = self.datastore.engine
        assert engine is not None
        self._is_postgres = engine.dialect.name == "postgresql"
        self._insert = table.insert()
        # sort_by_parameter_order: the ids come back in the order of the rows given.
        self._insert_returning = table.insert().returning(table.c.id, sort_by_parameter_order=True)
        self._last_id = text("SELECT last_insert_rowid()")
        columns = select(
            table.c.id,
            table.c.originator_id,
            table.c.originator_version,
            table.c.topic,
            table.c.state,
        ).order_by(table.c.id)
        after = table.c.id > bindparam("after")
        self._select_after = columns.where(after).limit(bindparam("limit"))
        self._select_between = columns.where(after, table.c.id <= bindparam("stop")).limit(
            bindparam("limit")
        )
        self._max_id = select(func.max(table.c.id))
        qualified = (
            f"{self.schema_name}.{self.events_table_name}"
            if self.schema_name
            else (self.events_table_name)
        )
        self._lock_and_notify = (
            f"LOCK TABLE {qualified} IN EXCLUSIVE MODE; NOTIFY {self.channel_name}"
        )
        columns_sql = "(originator_id, originator_version, topic, state)"
        mark = "%s" if self._is_postgres else "?"
        self._raw_insert = (
            f"INSERT INTO {qualified} {columns_sql} VALUES ({mark}, {mark}, {mark}, {mark})"
        )
        # One statement (a pipeline cannot carry two in one): the lock, then the NOTIFY.
        self._raw_lock_and_notify = (
            f"DO $$BEGIN LOCK TABLE {qualified} IN EXCLUSIVE MODE; "
            f"NOTIFY {self.channel_name}; END$$"
        )
        self._raw_insert_all = (
            f"INSERT INTO {qualified} {columns_sql} "
            "SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[]) "
            "RETURNING id, originator_id, originator_version"
        )
        self._raw_versions = (
            f"SELECT originator_id, max(originator_version) FROM {qualified} "
            + (
                "WHERE originator_id = ANY(%s) "
                if self._is_postgres
                else "WHERE originator_id IN ({}) "
            )
            + "GROUP BY originator_id"
        )
        self._versions = (
            select(table.c.originator_id, func.max(table.c.originator_version))
            .where(table.c.originator_id.in_(bindparam("ids", expanding=True)))
            .group_by(table.c.originator_id)
        )

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        session: Session | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        """A save in a transaction of its own goes through the driver's connection
        directly (see `_raw_transaction`); within a caller's session, the library's way."""
        if session is not None or self.datastore.scoped_session is not None:
            return super().insert_events(stored_events, session=session, **kwargs)
        if transactions.get(None) is not None:
            return super().insert_events(stored_events, **kwargs)
        read_versions: Mapping[UUID, int] | None = kwargs.get("read_versions")
        written = {event.originator_id for event in stored_events}
        expected = {i: v for i, v in (read_versions or {}).items() if i not in written}
        with self._raw_transaction() as connection:
            if self._is_postgres:
                return self._append_postgres(connection, stored_events, expected)
            return self._append_sqlite(connection, stored_events, expected)

    @contextmanager
    def _raw_transaction(self) -> Iterator[Any]:
        """One write transaction on the driver's own connection (from SQLAlchemy's
        pool), without a Session: on a batch of sixteen reports the session, its
        connection wrapper and statement compilation cost a fifth of the writer
        thread. Same locks as the library's transaction (SQLite: its write lock),
        same error mapping (a duplicate version is its IntegrityError)."""
        datastore = self.datastore
        if not datastore._tried_init_sqlite_wal_mode:
            datastore.init_sqlite_wal_mode()
        lock = datastore.access_lock or datastore.write_lock
        if lock is not None:
            lock.acquire()
        engine = datastore.engine
        assert isinstance(engine, Engine)
        try:
            try:
                pooled = engine.raw_connection()
            except Exception as exc:  # the database is unreachable: the library's error
                raise _persistence_error(exc) from exc
            driver: Any = pooled.driver_connection
            try:
                yield driver
            except BaseException as exc:
                with suppress(Exception):  # a broken connection: invalidated below
                    driver.rollback()
                if isinstance(exc, Exception) and not isinstance(exc, PersistenceError):
                    raise _persistence_error(exc) from exc
                raise
            finally:
                if getattr(driver, "closed", False):
                    pooled.invalidate()  # broken: the pool must not hand it out again
                pooled.close()
        finally:
            if lock is not None:
                lock.release()

    def _append_sqlite(
        self, connection: Any, stored_events: Sequence[StoredEvent], expected: Mapping[UUID, int]
    ) -> list[int]:
        cursor = connection.cursor()
        if not connection.in_transaction:
            cursor.execute("BEGIN")
        ids: list[int] = []
        if stored_events:
            cursor.executemany(
                self._raw_insert,
                [
                    (_uuid(e.originator_id).bytes, e.originator_version, e.topic, e.state)
                    for e in stored_events
                ],
            )
            # One transaction holds SQLite's write lock: its rowids are consecutive.
            last = int(cursor.execute("SELECT last_insert_rowid()").fetchone()[0])
            ids = list(range(last - len(stored_events) + 1, last + 1))
        if expected:
            keys = list(expected)
            found = cursor.execute(
                self._raw_versions.format(", ".join("?" * len(keys))), [k.bytes for k in keys]
            )
            _check(expected, {UUID(bytes=bytes(i)): v for i, v in found})
        connection.commit()
        return ids

    def _append_postgres(
        self, connection: Any, stored_events: Sequence[StoredEvent], expected: Mapping[UUID, int]
    ) -> list[int]:
        """BEGIN, the library's table lock (notification ids in commit order) with its
        NOTIFY (delivered at commit), one INSERT of every row and, when no aggregate
        needs checking, COMMIT: one pipeline, one round trip. A failing statement
        aborts the rest (COMMIT included) and raises when the pipeline syncs. Each
        statement costs the writer thread a wait that gives other threads the GIL,
        hence two statements rather than a statement per row."""
        cursor = connection.cursor()
        check = connection.cursor() if expected else None
        with connection.pipeline():
            connection.execute(self._raw_lock_and_notify)
            if stored_events:
                cursor.execute(
                    self._raw_insert_all,
                    (
                        [e.originator_id for e in stored_events],
                        [e.originator_version for e in stored_events],
                        [e.topic for e in stored_events],
                        [e.state for e in stored_events],
                    ),
                )
            if check is not None:
                check.execute(self._raw_versions, (list(expected),))
            else:
                connection.commit()
        # Each row's id by its key: exact whatever order RETURNING gives them in.
        found = {(i, v): id_ for id_, i, v in cursor.fetchall()} if stored_events else {}
        if check is not None:
            _check(expected, dict(check.fetchall()))
            connection.commit()
        return [found[(_uuid(e.originator_id), e.originator_version)] for e in stored_events]

    def _insert_stored_events(
        self,
        session: Session,
        stored_events: Sequence[StoredEvent],
        *,
        read_versions: Mapping[UUID, int] | None = None,
        **kwargs: Any,
    ) -> Sequence[int]:
        ids = self._insert_rows(session, stored_events)
        if read_versions:
            self._check_versions(session, read_versions, stored_events)
        return ids

    def _insert_rows(self, session: Session, stored_events: Sequence[StoredEvent]) -> list[int]:
        if not stored_events:
            return []
        rows = [
            {
                "originator_id": e.originator_id,
                "originator_version": e.originator_version,
                "topic": e.topic,
                "state": e.state,
            }
            for e in stored_events
        ]
        connection = session.connection()
        if self._is_postgres:
            # The library's table lock (notification ids in commit order) and its NOTIFY
            # (delivered at commit), sent in one round trip instead of two.
            connection.exec_driver_sql(self._lock_and_notify)
            ids = list(connection.execute(self._insert_returning, rows).scalars())
        else:
            # One transaction holds SQLite's write lock: its rowids are consecutive.
            connection.execute(self._insert, rows)
            last = int(connection.execute(self._last_id).scalar_one())
            ids = list(range(last - len(rows) + 1, last + 1))
        return ids

    def _check_versions(
        self,
        session: Session,
        read_versions: Mapping[UUID, int],
        stored_events: Sequence[StoredEvent],
    ) -> None:
        # An aggregate this save adds events to needs no check: had another process
        # stored any event since it was read, ours would collide with its version.
        written = {event.originator_id for event in stored_events}
        expected = {i: v for i, v in read_versions.items() if i not in written}
        if not expected:
            return
        moved = self._moved(session, expected)
        if moved:
            raise IntegrityError(f"written by another process since read: {', '.join(moved)}")

    def moved_since(self, read_versions: Mapping[UUID, int]) -> list[str]:
        """The aggregates among those read at `read_versions` that have newer events."""
        with self.transaction(commit=False) as session:
            return self._moved(session, read_versions)

    def versions(self, ids: Sequence[UUID]) -> dict[UUID, int]:
        """The last stored version of each of `ids` that has any event (one query)."""
        with self.transaction(commit=False) as session:
            found = session.connection().execute(self._versions, {"ids": list(ids)})
            return {originator_id: version for originator_id, version in found}

    def _moved(self, session: Session, expected: Mapping[UUID, int]) -> list[str]:
        found = session.connection().execute(self._versions, {"ids": list(expected)})
        stored = {originator_id: version for originator_id, version in found}
        return [str(i) for i, version in expected.items() if stored.get(i) != version]

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Notification]:
        if topics:
            return super().select_notifications(
                start, limit, stop, topics, inclusive_of_start=inclusive_of_start
            )
        after = 0 if start is None else start - 1 if inclusive_of_start else start
        params: dict[str, Any] = {"after": after, "limit": limit}
        statement = self._select_after
        if stop is not None:
            statement, params["stop"] = self._select_between, stop
        with self.transaction(commit=False) as session:
            found = session.connection().execute(statement, params)
            return [
                Notification(
                    id=id_,
                    originator_id=originator_id,
                    originator_version=version,
                    topic=topic,
                    state=bytes(state) if isinstance(state, memoryview) else state,
                )
                for id_, originator_id, version, topic, state in found
            ]

    def max_notification_id(self) -> int | None:
        with self.transaction(commit=False) as session:
            found = session.connection().execute(self._max_id).scalar()
            return None if found is None else int(found)


class Factory(SQLAlchemyFactory):
    """`PERSISTENCE_MODULE` for the event log: the library's factory with this recorder."""

    application_recorder_class = EventRecorder


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def _check(expected: Mapping[UUID, int], stored: Mapping[UUID, int]) -> None:
    moved = [str(i) for i, version in expected.items() if stored.get(i) != version]
    if moved:
        raise IntegrityError(f"written by another process since read: {', '.join(moved)}")


def _persistence_error(exc: Exception) -> PersistenceError:
    """The library's exception for a driver's (by DB-API class name, as its datastore
    maps them): IntegrityError for a duplicate version, and so on."""
    for cls in type(exc).__mro__:
        if cls.__name__ in exception_classes:
            return exception_classes[cls.__name__](str(exc))
    return PersistenceError(str(exc))
