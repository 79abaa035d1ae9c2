"""The event log's recorder: `eventsourcing_sqlalchemy`'s application recorder, with its
two hot paths written as SQLAlchemy Core statements built once.

The library's recorder inserts through the ORM (a mapped object per event, a unit-of-work
flush) and reads notifications through ORM queries; measured with cProfile, that was
most of an append's CPU and a third of a catch-up's read. Here an append is one
executemany (SQLite) or one multi-row INSERT ... RETURNING (PostgreSQL), and a read one
prebuilt SELECT. Everything else is the library's: the tables (muto_events,
muto_snapshots, same columns, same encoding, so stores written before open unchanged),
its transactions and error mapping (a duplicate aggregate version is its
IntegrityError), the table lock that keeps notification ids in commit order on
PostgreSQL, the NOTIFY its subscriptions listen for.

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

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification, StoredEvent
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy import Table, bindparam, func, select, text
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
        self._versions = (
            select(table.c.originator_id, func.max(table.c.originator_version))
            .where(table.c.originator_id.in_(bindparam("ids", expanding=True)))
            .group_by(table.c.originator_id)
        )

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
