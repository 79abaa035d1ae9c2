"""The event log's recorder: `eventsourcing_sqlalchemy`'s application recorder, with its
two hot paths written for speed.

The library's recorder inserts through the ORM (a mapped object per event, a unit-of-work
flush) and reads notifications through ORM queries; measured with cProfile, that was
most of an append's CPU and a third of a catch-up's read. Here every save is a
transaction of its own on the driver's connection, taken from SQLAlchemy's pool without
a Session: on SQLite one multi-row INSERT and a COMMIT; on PostgreSQL one call of an append
function (created by this recorder beside the library's tables, `_APPEND`) on an
autocommit connection, a single statement and round trip that takes the library's table
lock (notification ids in commit order), sends its NOTIFY (delivered at commit) and
inserts every row. Reading the log in order is one prebuilt SELECT on the driver's
connection too. Everything else is the library's: the tables (muto_events,
muto_snapshots, same columns, same encoding, so stores written before open unchanged),
its SQLite write lock, its error mapping (a duplicate aggregate version is its
IntegrityError).

One addition, `read_versions` (passed through `EventLog.save`): the version each
aggregate had when the writer read it from its cache. They are checked inside the
save's transaction, after the insert (so under the write lock on either database):
if another process has stored events for any of them since, the save raises
IntegrityError and rolls back, and the writer reloads and decides again. A cached
aggregate is thereby validated once per batch, in one query (none when the batch adds
events to every aggregate it read: the unique version index checks those), instead of
fast-forwarded with a query per command; and a command that decided to store nothing
is checked too. Where other processes write the same aggregates, the writer brings
its cached ones forward before a batch runs (`tails`: the events after each cached
version, one query), so that its save does not conflict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    Notification,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing_sqlalchemy.datastore import exception_classes
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy import Engine, Table, and_, bindparam, func, select
from sqlalchemy.orm import Session

from muto.projections.rows import values_statements


class EventRecorder(SQLAlchemyApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        table: Table = self.events_record_cls.__table__
        engine = self.datastore.engine
        assert engine is not None
        self._is_postgres = engine.dialect.name == "postgresql"
        self._versions = (
            select(table.c.originator_id, func.max(table.c.originator_version))
            .where(table.c.originator_id.in_(bindparam("ids", expanding=True)))
            .group_by(table.c.originator_id)
        )
        schema = f"{self.schema_name}." if self.schema_name else ""
        qualified = f"{schema}{self.events_table_name}"
        self._raw_max_id = f"SELECT max(id) FROM {qualified}"
        # The log in order (`select_notifications`), read on the driver's connection: a
        # Session and SQLAlchemy's result processing (a UUID made by a Python type
        # decorator per row) cost two thirds of reading a batch (14-18 -> 6-7 µs a
        # record on SQLite, measured).
        mark = "%s" if self._is_postgres else "?"
        selected = f"SELECT id, originator_id, originator_version, topic, state FROM {qualified}"
        self._raw_after = f"{selected} WHERE id > {mark} ORDER BY id LIMIT {mark}"
        self._raw_between = (
            f"{selected} WHERE id > {mark} AND id <= {mark} ORDER BY id LIMIT {mark}"
        )
        # SQLite: the rows in one statement (rows.values_statements), then the versions
        # check. OR FAIL: a collision stops the statement without undoing its earlier
        # rows, which the save's rollback undoes anyway. Plain INSERT (OR ABORT) keeps
        # a statement journal of every page it changes to undo itself alone, and past
        # 64 KiB (a batch of sixteen reports lands on about that many index pages)
        # SQLite writes it to a temporary file opened and closed per save: a tenth of a
        # save's time (py-spy, native frames; 55-59 -> 49 µs a report in batches of 16).
        self._raw_insert = (
            f"INSERT OR FAIL INTO {qualified} (originator_id, originator_version, topic, state) "
            "VALUES {rows}"
        )
        self._raw_versions = (
            f"SELECT originator_id, max(originator_version) FROM {qualified} "
            "WHERE originator_id IN ({}) GROUP BY originator_id"
        )
        # The events after given versions (`tails`): for each (id, version) pair, a
        # range of the unique (originator_id, originator_version) index. PostgreSQL's
        # planner joined an unnest by scanning the whole table (~1 ms per 10,000 events):
        # a LATERAL subquery it may not flatten (OFFSET 0) keeps the index.
        selected = "e.originator_id, e.originator_version, e.topic, e.state"
        matching = "e.originator_id = r.i AND e.originator_version > r.v"
        self._raw_tails = (
            f"SELECT t.* FROM unnest(%b::uuid[], %b::bigint[]) AS r(i, v), LATERAL (SELECT "
            f"{selected} FROM {qualified} AS e WHERE {matching} OFFSET 0) AS t ORDER BY 1, 2"
            if self._is_postgres
            else f"WITH r(i, v) AS (VALUES {{values}}) SELECT {selected} FROM {qualified} AS e, "
            f"r WHERE {matching} ORDER BY 1, 2"
        )
        # PostgreSQL: one function call (see _APPEND), in autocommit: one round trip.
        self._append_function = f"{schema}{self.events_table_name}_append"
        self._append_definition = _APPEND.format(
            function=self._append_function, events=qualified, channel=self.channel_name
        )
        # Arrays sent in binary (%b): as text, psycopg escaped every state's bytes in
        # Python, 9 ms for 512 events against under 1 ms (measured).
        self._append_call = (
            f"SELECT id, originator_id, originator_version FROM {self._append_function}"
            "(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[], %b::uuid[], %b::bigint[])"
        )
        self._append_ready = False
        # SQLite's save connection, kept checked out between saves (`_raw_transaction`),
        # under the datastore's lock like every save.
        self._kept: Any = None

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        session: Session | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        """Every save is a transaction of its own, on the driver's connection (see
        `_raw_transaction`). The library's save inside a caller's session is not
        offered: nothing in muto saves that way, and the event log's version check
        (`read_versions`) is only made here."""
        if session is not None or self.datastore.scoped_session is not None:
            raise ProgrammingError("the event log saves in a transaction of its own")
        read_versions: Mapping[UUID, int] | None = kwargs.get("read_versions")
        written = {event.originator_id for event in stored_events}
        expected = {i: v for i, v in (read_versions or {}).items() if i not in written}
        if self._is_postgres:
            if not self._append_ready:
                self._define_append()
            with self._raw_transaction(autocommit=True) as connection:
                return self._append_postgres(connection, stored_events, expected)
        with self._raw_transaction(kept=True) as connection:
            return self._append_sqlite(connection, stored_events, expected)

    def release(self) -> None:
        """Close the connection kept for saves (the event log is closing)."""
        with self._lock():
            kept, self._kept = self._kept, None
            if kept is not None:
                kept.invalidate()  # closed, never back in the pool in save mode

    @contextmanager
    def _raw_transaction(
        self, *, autocommit: bool = False, kept: bool = False, reading: bool = False
    ) -> Iterator[Any]:
        """The driver's own connection (from SQLAlchemy's pool), without a Session: on
        a batch of sixteen reports the session, its connection wrapper and statement
        compilation cost a fifth of the writer thread. Same locks as the library's
        transaction (SQLite: its write lock), same error mapping (a duplicate version
        is its IntegrityError). `autocommit`: each statement is its own transaction
        (PostgreSQL's append function).

        `kept` (SQLite's saves): one connection, kept checked out from one save to the
        next, one save at a time (SQLite's saves all hold the library's lock), instead of
        a checkout per save: the pool's checkout, its reset (a rollback) and return were
        an eighth of a single write (~30 µs, py-spy). After a failed save it goes back to
        the pool (or is dropped, if broken) and the next save checks out another. Not on
        PostgreSQL: there a connection can be lost (a restart, the network), and
        SQLAlchemy's answer, which invalidates every pooled connection when one is found
        lost, reaches only those checked in; beside a round trip to the server a
        checkout costs little.

        `reading`: a read takes no write lock, as the library's reads do (in-memory
        SQLite's one shared connection is still taken in turn)."""
        datastore = self.datastore
        if not datastore._tried_init_sqlite_wal_mode:
            datastore.init_sqlite_wal_mode()
        assert not kept or datastore.access_lock or datastore.write_lock, "SQLite's saves only"
        with self._lock(reading):
            pooled = self._checkout(autocommit, kept)
            driver: Any = pooled.driver_connection
            failed = True
            try:
                yield driver
                failed = False
            except BaseException as exc:
                with suppress(Exception):  # a broken connection: invalidated below
                    driver.rollback()
                if isinstance(exc, Exception) and not isinstance(exc, PersistenceError):
                    raise _persistence_error(exc) from exc
                raise
            finally:
                self._checkin(pooled, autocommit, kept and not failed)

    def _lock(self, reading: bool = False) -> Any:
        """The library's lock around SQLite's saves, or around every use of in-memory
        SQLite's one shared connection when `reading` (a no-op where there is none)."""
        datastore = self.datastore
        if reading:
            return datastore.access_lock or nullcontext()
        return datastore.access_lock or datastore.write_lock or nullcontext()

    def _checkout(self, autocommit: bool, kept: bool) -> Any:
        if kept and self._kept is not None:
            return self._kept
        engine = self.datastore.engine
        assert isinstance(engine, Engine)
        try:
            pooled = engine.raw_connection()
        except Exception as exc:  # the database is unreachable: the library's error
            raise _persistence_error(exc) from exc
        if autocommit:
            try:
                pooled.driver_connection.autocommit = True  # type: ignore[union-attr]
            except Exception as exc:
                pooled.invalidate()
                raise _persistence_error(exc) from exc
        if kept:
            self._kept = pooled
        return pooled

    def _checkin(self, pooled: Any, autocommit: bool, keep: bool) -> None:
        """Keep the save connection, or give a connection back to the pool. After a
        failed save the kept one goes back too (the pool resets it, and drops it if
        that fails: SQLite's closed connection says so no other way)."""
        driver = pooled.driver_connection
        broken = getattr(driver, "closed", False)
        if keep and not broken:
            return  # kept, in its mode, for the next save
        if pooled is self._kept:
            self._kept = None
        if autocommit and not broken:
            with suppress(Exception):  # broken: invalidated below
                driver.autocommit = False
        if broken or (autocommit and driver.autocommit):
            pooled.invalidate()  # broken: the pool must not hand it out again
        pooled.close()

    def _append_sqlite(
        self, connection: Any, stored_events: Sequence[StoredEvent], expected: Mapping[UUID, int]
    ) -> list[int]:
        cursor = connection.cursor()
        if not connection.in_transaction:
            cursor.execute("BEGIN")
        ids: list[int] = []
        if stored_events:
            rows = [
                (_uuid(e.originator_id).bytes, e.originator_version, e.topic, e.state)
                for e in stored_events
            ]
            for sql, params in values_statements(connection, self._raw_insert, rows):
                cursor.execute(sql, params)
            # One transaction holds SQLite's write lock: its rowids are consecutive.
            last = int(cursor.execute("SELECT last_insert_rowid()").fetchone()[0])
            ids = list(range(last - len(stored_events) + 1, last + 1))
        if expected:
            keys = list(expected)
            found = cursor.execute(
                self._raw_versions.format(", ".join("?" * len(keys))), [k.bytes for k in keys]
            )
            _check(expected, {_originator(i): v for i, v in found})
        connection.commit()
        return ids

    def _append_postgres(
        self, connection: Any, stored_events: Sequence[StoredEvent], expected: Mapping[UUID, int]
    ) -> list[int]:
        """One statement, its own transaction: the append function takes the library's
        table lock, sends its NOTIFY, inserts every row and checks the aggregates read
        but not written; any failure rolls all of it back. One round trip, and far
        less of psycopg's Python than a pipeline of four statements (half the writer
        thread's CPU per save, measured)."""
        found = connection.execute(
            self._append_call,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
                list(expected),
                list(expected.values()),
            ),
            prepare=True,
        ).fetchall()
        # Each row's id by its key: exact whatever order RETURNING gives them in.
        ids = {(i, v): id_ for id_, i, v in found}
        return [ids[(_uuid(e.originator_id), e.originator_version)] for e in stored_events]

    def _define_append(self) -> None:
        """Create (or replace) the append function, once per process: under an advisory
        lock, as processes opening one database at once would otherwise collide."""
        with self._raw_transaction() as connection:
            connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (self._append_function,)
            )
            connection.execute(self._append_definition)
            connection.commit()
        self._append_ready = True

    def moved_since(self, read_versions: Mapping[UUID, int]) -> list[str]:
        """The aggregates among those read at `read_versions` that have newer events."""
        stored = self.versions(list(read_versions))
        return [str(i) for i, version in read_versions.items() if stored.get(i) != version]

    def versions(self, ids: Sequence[UUID]) -> dict[UUID, int]:
        """The last stored version of each of `ids` that has any event (one query)."""
        with self.transaction(commit=False) as session:
            found = session.connection().execute(self._versions, {"ids": list(ids)})
            return {originator_id: version for originator_id, version in found}

    def tails(self, versions: Mapping[UUID, int]) -> dict[UUID, list[StoredEvent]]:
        """The events stored after each aggregate's version in `versions` (by other
        processes, for a cached aggregate), in one query; aggregates with none are
        absent."""
        if not versions:
            return {}
        if self._is_postgres:
            statement = self._raw_tails
            params: Sequence[Any] = (list(versions), list(versions.values()))
        else:
            statement = self._raw_tails.replace("{values}", ", ".join(["(?, ?)"] * len(versions)))
            params = [x for i, v in versions.items() for x in (i.bytes, v)]
        found: dict[UUID, list[StoredEvent]] = {}
        # On the driver's connection, as a save: through the library's session each read
        # cost ~0.3 ms of CPU on PostgreSQL, more than the query.
        with self._raw_transaction(autocommit=self._is_postgres, kept=not self._is_postgres) as c:
            for row in c.execute(statement, params).fetchall():
                originator_id = _originator(row[0])
                found.setdefault(originator_id, []).append(_stored(originator_id, *row[1:]))
        return found

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
        statement, params = (
            (self._raw_after, (after, limit))
            if stop is None
            else (self._raw_between, (after, stop, limit))
        )
        with self._raw_transaction(autocommit=self._is_postgres, reading=True) as connection:
            found = connection.execute(statement, params).fetchall()
        return [
            Notification(
                id=id_,
                originator_id=_originator(originator_id),
                originator_version=version,
                topic=topic,
                state=bytes(state) if isinstance(state, memoryview) else state,
            )
            for id_, originator_id, version, topic, state in found
        ]

    def histories(
        self, ids: Sequence[UUID], snapshots: Table | None
    ) -> dict[UUID, tuple[StoredEvent | None, list[StoredEvent]]]:
        """What loads each of `ids`: its latest snapshot (from the `snapshots` table, if
        given) and its events after it, in two queries whatever the number of ids (the
        library's repository takes two per aggregate). Ids with neither are absent."""
        events: Table = self.events_record_cls.__table__
        found: dict[UUID, tuple[StoredEvent | None, list[StoredEvent]]] = {}
        with self.transaction(commit=False) as session:
            connection = session.connection()
            latest = None
            if snapshots is not None:
                s = snapshots.c
                latest = (
                    select(s.originator_id, func.max(s.originator_version).label("version"))
                    .where(s.originator_id.in_(ids))
                    .group_by(s.originator_id)
                    .subquery()
                )
                rows = connection.execute(
                    select(s.originator_id, s.originator_version, s.topic, s.state).join(
                        latest,
                        and_(
                            s.originator_id == latest.c.originator_id,
                            s.originator_version == latest.c.version,
                        ),
                    )
                )
                for row in rows:
                    found[row[0]] = (_stored(*row), [])
            e = events.c
            tail = select(e.originator_id, e.originator_version, e.topic, e.state).where(
                e.originator_id.in_(ids)
            )
            if latest is not None:
                tail = tail.outerjoin(latest, latest.c.originator_id == e.originator_id).where(
                    e.originator_version > func.coalesce(latest.c.version, 0)
                )
            for row in connection.execute(tail.order_by(e.originator_id, e.originator_version)):
                found.setdefault(row[0], (None, []))[1].append(_stored(*row))
        return found

    def max_notification_id(self) -> int | None:
        """The projector's look, ten a second: on the driver's connection, as every read
        of the log (PostgreSQL: ~270 -> ~55 µs of CPU against a Session)."""
        with self._raw_transaction(autocommit=self._is_postgres, reading=True) as connection:
            found = connection.execute(self._raw_max_id).fetchone()[0]
        return None if found is None else int(found)


def _stored(originator_id: UUID, version: int, topic: str, state: Any) -> StoredEvent:
    return StoredEvent(
        originator_id=originator_id,
        originator_version=version,
        topic=topic,
        state=bytes(state) if isinstance(state, memoryview) else state,
    )


class Factory(SQLAlchemyFactory):
    """`PERSISTENCE_MODULE` for the event log: the library's factory with this recorder."""

    application_recorder_class = EventRecorder


# The PostgreSQL append: the library's table lock (notification ids in commit order) and
# NOTIFY (delivered at commit), every row in one INSERT, then the check of the aggregates
# the batch read but did not write (`read_versions`): moved since, the save fails as a
# version collision does (SQLSTATE 23000: the library's IntegrityError).
_APPEND = """
CREATE OR REPLACE FUNCTION {function}(
    ids uuid[], versions bigint[], topics text[], states bytea[],
    read_ids uuid[], read_versions bigint[])
RETURNS TABLE (id bigint, originator_id uuid, originator_version bigint)
LANGUAGE plpgsql AS $append$
#variable_conflict use_column
DECLARE
    moved text;
BEGIN
    LOCK TABLE {events} IN EXCLUSIVE MODE;
    NOTIFY {channel};
    RETURN QUERY
        INSERT INTO {events} AS e (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states)
        RETURNING e.id, e.originator_id, e.originator_version;
    SELECT string_agg(r.i::text, ', ') INTO moved
    FROM unnest(read_ids, read_versions) AS r(i, v)
    WHERE r.v IS DISTINCT FROM (
        SELECT max(x.originator_version) FROM {events} AS x WHERE x.originator_id = r.i);
    IF moved IS NOT NULL THEN
        RAISE EXCEPTION 'written by another process since read: %', moved
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
END
$append$
"""


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def _originator(stored: UUID | bytes | memoryview) -> UUID:
    """An originator id as the driver returns it (PostgreSQL: a UUID; SQLite: its 16
    bytes), remembered: `UUID(bytes=...)` is Python code (~1 µs) and a log holds few
    aggregates many times over. A pure function of its argument, so the memo is never
    stale; it is emptied when full."""
    if isinstance(stored, UUID):
        return stored
    key = bytes(stored)
    found = _ORIGINATORS.get(key)
    if found is None:
        if len(_ORIGINATORS) >= _ORIGINATORS_KEPT:
            _ORIGINATORS.clear()
        found = _ORIGINATORS[key] = UUID(bytes=key)
    return found


_ORIGINATORS: dict[bytes, UUID] = {}
_ORIGINATORS_KEPT = 100_000


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
