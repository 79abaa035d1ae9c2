"""The view store: SQL read models and each projection's position, in one database.

It is the library's SQLAlchemyTrackingRecorder, so recording a position twice raises
IntegrityError, and view rows plus position commit in one transaction: a crash between
the update and the commit leaves both as they were.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from eventsourcing_sqlalchemy.recorders import SQLAlchemyTrackingRecorder
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from muto.projections.locks import DUTIES, Lock
from muto.projections.rows import SQLITE_JSON, decode_json, driver_of

if TYPE_CHECKING:
    from muto.projections.base import Projection

logger = logging.getLogger("muto.projections")
TRACKING_TABLE = "muto_projection_tracking"
# Each view's `Projection.version`: the meaning its rows were built by (see reshape).
VERSIONS_TABLE = "muto_projection_versions"
# A built view with no version stored was built before versions were stored: by the
# first meaning of each view.
FIRST_VERSION = 1
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
MAX_PLAIN = 64  # compiled statements kept for read()


class ViewsRefused(Exception):
    """The views cannot be opened as asked; the message says why, in one line."""


class ViewsAhead(ViewsRefused):
    """The views have taken in positions past the end of the event log: a log restored
    from a backup (or copied without its -wal file) beside newer views, or a log that
    lost its last events. Served, the views would show events the log does not hold,
    and skip new ones stored at positions they believe applied. Rebuilding them is the
    operator's call: the audit chain in the views is the evidence of a lost tail."""

    def __init__(self, applied: int, head: int) -> None:
        super().__init__(
            f"the views are ahead of the event log: they have applied it up to position "
            f"{applied}, but it ends at position {head}"
        )
        self.applied = applied
        self.head = head


class ViewsInUse(ViewsRefused):
    """The views cannot be dropped: another process uses them."""


class _Plain(NamedTuple):
    """A statement as `read()` runs it on the driver: its SQL in the dialect's parameter
    style, the parameters' order when positional (SQLite), their values given at build
    time, the bind and result conversions the driver does not do itself (e.g. JSON on
    SQLite), and the rows' shape."""

    sql: str
    order: tuple[str, ...] | None
    defaults: dict[str, Any]
    binds: Sequence[tuple[str, Callable[[Any], Any]]]
    results: tuple[Callable[[Any], Any] | None, ...]
    row: Any  # a namedtuple class


SQLITE_AT_LEAST = (3, 33, 0)  # UPDATE ... FROM (rows.Rows.write_changes)


class ViewStore(SQLAlchemyTrackingRecorder):
    def __init__(self, url: str) -> None:
        in_memory = ":memory:" in url or "mode=memory" in url  # one shared connection
        pool: dict[str, Any] = (
            {} if in_memory else {"pool_size": KEPT_CONNECTIONS, "max_overflow": MORE_UNDER_LOAD}
        )
        super().__init__(SQLAlchemyDatastore(url=url, **pool), tracking_table_name=TRACKING_TABLE)
        self.metadata = MetaData()
        self.versions = Table(
            VERSIONS_TABLE,
            self.metadata,
            Column("projection", String(64), primary_key=True),
            Column("version", Integer, nullable=False),
        )
        engine = self.datastore.engine
        assert isinstance(engine, Engine)
        self.engine = engine
        self.is_postgres = self.engine.dialect.name == "postgresql"
        if not self.is_postgres and sqlite3.sqlite_version_info < SQLITE_AT_LEAST:
            raise RuntimeError(
                f"the views need SQLite {'.'.join(map(str, SQLITE_AT_LEAST))} or later "
                f"(UPDATE ... FROM), this Python has {sqlite3.sqlite_version}"
            )
        if self.engine.dialect.name == "sqlite" and self.datastore.is_sqlite_filedb:
            event.listen(self.engine, "connect", _derived_durability)
        self._plain: dict[Select[Any], _Plain] = {}  # read()'s statements, compiled
        t = self.tracking_table
        self._insert_position = t.insert()
        # The projector's positions, on the driver's connection (see `positions`).
        if self.is_postgres:
            self._positions_sql = (
                f"SELECT application_name, notification_id FROM {t.name} "
                "WHERE application_name = ANY(%s)"
            )
            self._move_sql = (
                f"UPDATE {t.name} SET notification_id = %s FROM unnest(%s::text[], "
                "%s::bigint[]) AS v(name, seen) "
                f"WHERE {t.name}.application_name = v.name AND {t.name}.notification_id = v.seen"
            )
        else:
            # With SQLite's JSON functions the rows come back as one value: one row
            # stepped, not one a projection (see rows.values_statements).
            columns = "application_name, notification_id"
            self._positions_sql = (
                f"SELECT {f'json_group_array(json_array({columns}))' if SQLITE_JSON else columns} "
                f"FROM {t.name} WHERE application_name IN ({{}})"
            )
            self._move_sql = (
                f"UPDATE {t.name} SET notification_id = ? "
                "WHERE notification_id = ? AND application_name IN ({})"
            )

    def create_table(self) -> None:
        super().create_table()
        self.metadata.create_all(self.engine, checkfirst=True)

    def reshape(self, projections: Iterable[Projection]) -> list[str]:
        """Views are derived: one built by another definition is dropped with its
        position, and catch-up rebuilds it from the log. Another definition is either
        stored columns that differ from the view's (an upgrade added one) or a stored
        version other than the view's `Projection.version` (an upgrade changed what its
        rows say from the same events, with the same columns). An integer column the
        definition has widened to 64 bits is altered in place on PostgreSQL (SQLite's
        integers are 64 bits whatever the declared type). Each view's version is stored
        in the same transaction, so the next open (of this or another process: on
        PostgreSQL they take turns on the projector lock) finds it current and rebuilds
        nothing. Returns the names rebuilt."""
        projections = list(projections)
        reshaped = []
        with self.writing() as session:
            connection = session.connection()
            found = inspect(connection)
            built = self._versions(session)
            positions = self.positions(session, [p.name for p in projections])
            for projection in projections:
                stored = {
                    table: found.get_columns(table.name)
                    for table in projection.tables
                    if found.has_table(table.name)
                }
                stale = [
                    table.name
                    for table, columns in stored.items()
                    if {c["name"] for c in columns} != set(table.c.keys())
                ]
                was = built.get(projection.name)
                if was is None:  # nothing applied yet (a new view): nothing to rebuild
                    was = FIRST_VERSION if positions[projection.name] else projection.version
                if stale:
                    logger.warning("view %s changed shape (%s): rebuilding it from the log",
                                   projection.name, ", ".join(stale))  # fmt: skip
                elif was != projection.version:
                    logger.warning("view %s changed meaning (version %d, built by %d): "
                                   "rebuilding it from the log",
                                   projection.name, projection.version, was)  # fmt: skip
                else:
                    if self.is_postgres:
                        self._widen(session, projection.name, stored)
                    continue
                self._drop(session, projection)
                reshaped.append(projection.name)
            if reshaped:
                self.metadata.create_all(connection, checkfirst=True)
            self._keep_versions(session, built, projections)
        return reshaped

    def drop_views(self, projections: Iterable[Projection]) -> None:
        """Drop every view of `projections` and forget every position stored here (the
        MQTT notifier's too: it then publishes each vehicle's latest notify again, which
        is harmless), in one transaction; catch-up rebuilds the views from the log as it
        stands. On PostgreSQL, refused (ViewsInUse) while another process holds a duty:
        it would go on projecting and publishing from positions that are gone."""
        with self.writing() as session:
            if self.is_postgres:
                held = self._duties_elsewhere(session)
                if held:
                    raise ViewsInUse(
                        f"another process uses these views (it holds the {', '.join(held)} "
                        "duty): stop every process of the deployment, the API replicas "
                        "too, before the views are rebuilt"
                    )
            for projection in projections:
                self._drop(session, projection)
            session.query(self.tracking_record_cls).delete()
            self.metadata.create_all(session.connection(), checkfirst=True)

    def _drop(self, session: Session, projection: Projection) -> None:
        """One view's tables and its position."""
        connection = session.connection()
        for table in reversed(projection.tables):
            table.drop(connection, checkfirst=True)
        self.forget_position(session, projection.name)

    def _duties_elsewhere(self, session: Session) -> list[str]:
        """The duties (locks.DUTIES) another session of this database holds. An advisory
        lock on one bigint key shows in pg_locks as its high and low 32 bits."""
        keys = {int(duty): duty.name.lower() for duty in DUTIES}
        found = session.execute(
            text(
                "SELECT DISTINCT (classid::bigint << 32) | objid::bigint AS key FROM pg_locks "
                "WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
                "AND pid <> pg_backend_pid() "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalars()
        return sorted(keys[key] for key in found if key in keys)

    def furthest_tracked(self, session: Session) -> int:
        """The furthest log position any reader of this store has recorded (each view,
        the MQTT notifier); 0 before the tracking table exists."""
        t = self.tracking_table
        if not inspect(session.connection()).has_table(t.name):
            return 0
        found = session.execute(select(func.max(t.c.notification_id))).scalar()
        return int(found or 0)

    def _versions(self, session: Session) -> dict[str, int]:
        """Each view's stored version (none for a view built before they were stored)."""
        found = session.execute(self.versions.select())
        return {row.projection: row.version for row in found}

    def _keep_versions(
        self, session: Session, built: dict[str, int], projections: list[Projection]
    ) -> None:
        """Store the version of each view whose stored one differs (once per upgrade)."""
        changed = {p.name: p.version for p in projections if built.get(p.name) != p.version}
        if not changed:
            return
        session.execute(self.versions.delete().where(self.versions.c.projection.in_(changed)))
        session.execute(
            self.versions.insert(),
            [{"projection": name, "version": v} for name, v in changed.items()],
        )

    def _widen(self, session: Session, view: str, stored: dict[Table, list[Any]]) -> None:
        """ALTER to BIGINT each stored integer column the definition declares 64-bit."""
        for table, columns in stored.items():
            name = table.name
            for column in columns:
                defined = table.c[column["name"]].type
                if isinstance(defined, BigInteger) and not isinstance(column["type"], BigInteger):
                    logger.warning("view %s: widening %s.%s to 64 bits", view, name,
                                   column["name"])  # fmt: skip
                    session.execute(
                        text(f'ALTER TABLE {name} ALTER COLUMN "{column["name"]}" TYPE BIGINT')
                    )

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

    def read(self, statement: Select[Any], params: dict[str, Any] | None = None) -> list[Any]:
        """One prebuilt SELECT, compiled once, run on the driver's own connection outside
        any transaction (one round trip on PostgreSQL); rows are named tuples. For the hot,
        single-statement reads (a poll, a token); several reads that must agree use
        `reading()`. SQLAlchemy's execute on a connection switched to autocommit for the
        call cost ~210 µs a read on SQLite (setting and resetting the isolation level is
        a PRAGMA each way), this ~25 µs."""
        plain = self._plain.get(statement) or self._compile(statement)
        given = {**plain.defaults, **params} if params else dict(plain.defaults)
        for name, process in plain.binds:
            given[name] = process(given[name])
        args = tuple(given[name] for name in plain.order) if plain.order is not None else given
        error = self.engine.dialect.loaded_dbapi.Error
        try:
            raw = self.engine.raw_connection()
        except error as exc:  # no connection to be had: as SQLAlchemy's own connect says
            raise DBAPIError.instance(plain.sql, args, exc, error) from exc
        try:
            found = self._fetch(raw, plain.sql, args)
        except error as exc:
            # Whatever state it was left in (autocommit, a broken socket), this connection
            # is not handed out again: a writer must never get it.
            raw.invalidate(exc)
            raise DBAPIError.instance(plain.sql, args, exc, error) from exc
        finally:
            raw.close()
        if plain.results:
            found = [
                tuple(v if p is None else p(v) for v, p in zip(row, plain.results, strict=True))
                for row in found
            ]
        return [plain.row._make(row) for row in found]

    def _fetch(self, raw: Any, sql: str, args: Any) -> list[Any]:
        """Run one statement on a pooled driver connection: on PostgreSQL in autocommit
        for the call (no BEGIN and ROLLBACK round trips), SQLite's driver opens no
        transaction for a SELECT."""
        driver = raw.driver_connection
        if self.is_postgres:
            driver.autocommit = True
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        finally:
            if self.is_postgres:
                driver.autocommit = False

    def _compile(self, statement: Select[Any]) -> _Plain:
        dialect = self.engine.dialect
        compiled = statement.compile(dialect=dialect)
        if any(b.expanding for b in compiled.binds.values()):
            raise ValueError("read() takes no expanding (IN) parameters; use reading()")
        binds = [
            (name, process)
            for name, b in compiled.binds.items()
            if (process := b.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in statement.selected_columns
        )
        plain = _Plain(
            sql=str(compiled),
            order=tuple(compiled.positiontup or ()) if compiled.positional else None,
            defaults=dict(compiled.params),
            binds=binds,
            results=results if any(p is not None for p in results) else (),
            row=namedtuple("row", statement.selected_columns.keys(), rename=True),  # type: ignore[misc]
        )
        if len(self._plain) >= MAX_PLAIN:  # statements are prebuilt: a bound, not a cache policy
            self._plain.clear()
        self._plain[statement] = plain
        return plain

    def record_position(self, session: Session, projection: str, position: int) -> None:
        self._insert_tracking(
            session, Tracking(application_name=projection, notification_id=position)
        )

    def position_of(self, projection: str) -> int:
        return self.max_tracking_id(projection) or 0

    # The projector's hot path reads and moves every position once per batch. Through
    # the library's ORM queries that was two queries per projection per batch (a third
    # of the cloud's CPU under load, measured with py-spy); these are the same rows,
    # read in one query and moved with one compare-and-set, on the driver's connection
    # in the session's transaction (SQLAlchemy's compilation of a statement with an
    # expanding IN was most of a query's cost: ~0.6 ms of a 4 ms step, measured).

    def positions(self, session: Session, names: Iterable[str]) -> dict[str, int]:
        wanted = list(names)
        if not wanted:
            return {}
        driver = driver_of(session.connection())
        if self.is_postgres:
            found = driver.execute(self._positions_sql, (wanted,)).fetchall()
        else:
            marks = ", ".join("?" * len(wanted))
            found = driver.execute(self._positions_sql.format(marks), wanted).fetchall()
            if SQLITE_JSON:
                found = decode_json(found[0][0])
        known = dict(found)
        return {name: known.get(name, 0) for name in wanted}

    def advance(self, session: Session, seen: Mapping[str, int], position: int) -> None:
        """Move each projection's position from where it was `seen` to `position`:
        IntegrityError if another projector moved any of them since (nothing is applied
        twice). One statement for all (on SQLite one per distinct `seen`: they are all
        the same but after a projection was rebuilt)."""
        fresh = [name for name, at in seen.items() if at == 0]
        if fresh:
            session.connection().execute(
                self._insert_position,
                [{"application_name": name, "notification_id": position} for name in fresh],
            )
        moving = {name: at for name, at in seen.items() if at}
        if not moving:
            return
        driver = driver_of(session.connection())
        if self.is_postgres:
            params = (position, list(moving), list(moving.values()))
            moved = driver.execute(self._move_sql, params).rowcount
        else:
            by_seen: dict[int, list[str]] = {}
            for name, at in moving.items():
                by_seen.setdefault(at, []).append(name)
            moved = sum(
                driver.execute(
                    self._move_sql.format(", ".join("?" * len(names))), [position, at, *names]
                ).rowcount
                for at, names in by_seen.items()
            )
        if moved != len(moving):
            raise IntegrityError(f"a position of {', '.join(moving)} moved since it was read")

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
