"""Prebuilt, parameterised statements on one table, addressed by its key columns.

SQLAlchemy constructs and cache-keys a statement on every `update(...).where(...)`; done
per event, that dominated the projector's time (measured on SQLite: 2.7k updates/s built
per call against 28k/s built once). Here each statement is built once and every event
pays only its execution.

Views that keep a batch's rows in memory (inventory) read them with `load` (one SELECT
per 500 keys) and write them back with `write_changes` (one statement per set of
changed columns), instead of a SELECT and an UPDATE per event.
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from typing import Any

import msgspec
from sqlalchemy import (
    JSON,
    Delete,
    Row,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    select,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


def _sqlite_json() -> bool:
    """Whether this Python's SQLite has its JSON functions (built in since 3.38; an
    option of the build before)."""
    with closing(sqlite3.connect(":memory:")) as probe:
        try:
            probe.execute("SELECT json_group_array(json_array(1))").close()
        except sqlite3.OperationalError:
            return False
    return True


# Reads return their rows as one JSON value where SQLite can: every row a SELECT steps
# lets go of the GIL and takes it back (see `values_statements`).
SQLITE_JSON = _sqlite_json()
ROWS_PER_STATEMENT = 256  # rows in one SQLite statement (and within its variable limit)
_encode_json = msgspec.json.Encoder().encode
decode_json = msgspec.json.Decoder().decode


def json_text(value: Any) -> str | None:
    """A JSON column's value as the text the database stores (None: SQL NULL)."""
    return None if value is None else _encode_json(value).decode()


def arrays(table: Table, columns: Sequence[str], dialect: Dialect) -> str:
    """PostgreSQL parameters for `unnest(...)`: one binary array per column (%b: no text
    escaping in Python), typed as the column is."""
    return ", ".join(f"%b::{table.c[c].type.compile(dialect=dialect)}[]" for c in columns)


def execute_rows(connection: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """One statement over many rows on the driver. PostgreSQL: one execution with each
    column of the rows as one array (the statement reads them with `unnest`; psycopg's
    executemany is a statement per row). SQLite: `sql` has `{rows}` where the rows go
    as VALUES groups (`sqlite_rows`)."""
    if connection.dialect.name == "postgresql":
        on_driver(connection, sql, tuple(list(c) for c in zip(*rows, strict=True)))
    else:
        sqlite_rows(connection, sql, rows)


def sqlite_rows(connection: Connection, template: str, rows: Sequence[Sequence[Any]]) -> None:
    """`template` over `rows` on SQLite (`values_statements`), on the driver."""
    driver = driver_of(connection)
    for sql, params in values_statements(driver, template, rows):
        on_driver(connection, sql, params)


def values_statements(
    driver: sqlite3.Connection, template: str, rows: Sequence[Sequence[Any]]
) -> Iterator[tuple[str, list[Any]]]:
    """`template` with its `{rows}` replaced by one `(?, ...)` group per row, a few
    hundred rows a statement (within SQLite's variable limit), with their parameters:
    run these instead of an executemany. The sqlite3 module lets go of the GIL around
    every row it steps and must then take it back; in a server whose other threads
    keep it busy that wait is up to a switch interval (5 ms) a row. Measured on a
    projector step of 32 reports beside a thread that never yields the GIL: 510-530 ms
    and ~150 context switches with executemany, 140-180 ms and ~50 so."""
    if not rows:
        return
    width = len(rows[0])
    variables = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = max(1, min(ROWS_PER_STATEMENT, variables // width))
    group = f"({', '.join('?' * width)})"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        yield (
            template.replace("{rows}", ", ".join([group] * len(chunk))),
            [value for row in chunk for value in row],
        )


def driver_of(connection: Connection) -> Any:
    """The DB-API connection under `connection` (in its transaction)."""
    return connection.connection.driver_connection


def on_driver(connection: Connection, sql: str, params: Any) -> None:
    """Run `sql` on the DB-API connection under `connection`'s transaction, without
    SQLAlchemy's execution machinery (~0.1 ms a statement, several per projector step);
    its errors are raised as SQLAlchemy would have raised them (a broken constraint is
    sqlalchemy.exc.IntegrityError, which the projector knows)."""
    driver = driver_of(connection)
    dialect = connection.dialect
    cursor = driver.cursor()
    try:
        cursor.execute(sql, params)
    except dialect.loaded_dbapi.Error as exc:
        if dialect.is_disconnect(exc, driver, cursor):  # as SQLAlchemy: never pooled again
            connection.invalidate(exc)
        raise DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


class DriverInsert:
    """INSERT of many rows on the DB-API connection: no per-row parameter processing by
    SQLAlchemy (most of a batch's write cost on SQLite). On SQLite one statement; on
    PostgreSQL one COPY (psycopg's executemany sends a statement per row, ~100 µs of
    Python each: 41 % of a catch-up there). JSON columns are encoded here with msgspec;
    rows are tuples in `columns` order."""

    def __init__(self, table: Table, columns: list[str] | None = None) -> None:
        self.table = table
        self.columns = columns or [c.name for c in table.c]
        self.json = [isinstance(table.c[c].type, JSON) for c in self.columns]
        self._sql: dict[str, str] = {}

    def sql(self, session: Session, head: str = "INSERT INTO", values: str | None = None) -> str:
        """The statement for one row, or with `values` in place of its VALUES group."""
        dialect = session.get_bind().dialect
        found = self._sql.get(f"{head} {values}")
        if found is None:
            quote = dialect.identifier_preparer.quote
            mark = "?" if dialect.paramstyle == "qmark" else "%s"
            found = self._sql[f"{head} {values}"] = (
                f"{head} {quote(self.table.name)} "
                f"({', '.join(quote(c) for c in self.columns)}) "
                f"VALUES {values or '(' + ', '.join(mark for _ in self.columns) + ')'}"
            )
        return found

    def execute(self, session: Session, rows: list[tuple[Any, ...]]) -> None:
        if rows and any(self.json):
            flags = self.json
            rows = [
                tuple(json_text(v) if j else v for v, j in zip(row, flags, strict=True))
                for row in rows
            ]
        self.write(session, rows)

    def write(self, session: Session, rows: list[tuple[Any, ...]]) -> None:
        """Rows whose JSON columns are already JSON text."""
        if not rows:
            return
        connection = session.connection()
        if connection.dialect.name != "postgresql":
            sqlite_rows(connection, self.sql(session, values="{rows}"), rows)
            return
        copy_sql = self._sql.get("COPY")
        if copy_sql is None:
            quote = connection.dialect.identifier_preparer.quote
            copy_sql = self._sql["COPY"] = (
                f"COPY {quote(self.table.name)} "
                f"({', '.join(quote(c) for c in self.columns)}) FROM STDIN"
            )
        driver = driver_of(connection)
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)


class LatestRows:
    """Rows that replace whatever a table holds under their primary key: the latest-only
    tables (health, heartbeats, vehicles' snapshots), flushed in batches of thousands.
    On the DB-API connection, as DriverInsert: SQLite one upsert executemany; PostgreSQL
    one `INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO UPDATE` (one statement,
    where SQLAlchemy's executemany sent one per row, and no DELETE-then-INSERT window in
    which another process's flush of the same key fails on the key). Rows are tuples in
    the table's column order, JSON columns as JSON text; of two rows with one key in a
    batch, the later is kept. With `newer_at` (a column of ISO 8601 times), a row replaces
    the stored one only if its time is not earlier: a late report, or another process's
    flush of an older one, never moves the table back. Times compare as instants, not
    text (rows stored before times were kept in UTC carry the vehicle's offset)."""

    def __init__(self, table: Table, newer_at: str | None = None) -> None:
        self.table = table
        self.columns = [c.name for c in table.c]
        self.key = [c.name for c in table.primary_key.columns]
        self.newer_at = newer_at
        # A row's key: the value itself for one key column, a tuple for several.
        self._key_of = operator.itemgetter(*(self.columns.index(k) for k in self.key))
        self._insert = DriverInsert(table)
        self._upsert: str | None = None

    def write(self, session: Session, rows: list[tuple[Any, ...]]) -> None:
        by_key = dict(zip(map(self._key_of, rows), rows, strict=True))
        if not by_key:
            return
        execute_rows(session.connection(), self._upsert_sql(session), list(by_key.values()))

    def _upsert_sql(self, session: Session) -> str:
        if self._upsert is None:
            dialect = session.get_bind().dialect
            quote = dialect.identifier_preparer.quote
            table = quote(self.table.name)
            postgres = dialect.name == "postgresql"
            if not postgres and self.newer_at is None:
                self._upsert = self._insert.sql(session, "INSERT OR REPLACE INTO", "{rows}")
                return self._upsert
            if not postgres:
                rows = self._insert.sql(session, values="{rows}")
            else:
                names = ", ".join(quote(c) for c in self.columns)
                rows = (
                    f"INSERT INTO {table} ({names}) "
                    f"SELECT * FROM unnest({arrays(self.table, self.columns, dialect)})"
                )
            changed = [c for c in self.columns if c not in self.key]
            self._upsert = (
                f"{rows} ON CONFLICT ({', '.join(quote(k) for k in self.key)}) DO UPDATE SET "
                + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in changed)
            )
            if self.newer_at is not None:
                at = quote(self.newer_at)
                instant = "CAST({} AS timestamptz)" if postgres else "julianday({})"
                stored, offered = instant.format(f"{table}.{at}"), instant.format(f"EXCLUDED.{at}")
                self._upsert += f" WHERE {stored} <= {offered}"
        return self._upsert


class Rows:
    """`keep`: (column, value) of rows that `write_changes` never updates (a rollout
    member rolled back stays so)."""

    def __init__(self, table: Table, *key: str, keep: tuple[str, str] | None = None) -> None:
        self.table = table
        self.key = key
        self.keep = keep
        where = and_(*(table.c[k] == bindparam(f"k_{k}") for k in key))
        self._where = where
        self._insert = DriverInsert(table)
        self._select: Select[Any] = select(table).where(where)
        self._delete: Delete = table.delete().where(where)
        self._updates: dict[tuple[str, ...], Update] = {}
        self._loads: dict[
            tuple[str, tuple[str, ...]], str
        ] = {}  # `select_in`, by dialect and columns
        self._update_texts: dict[tuple[str, ...], str] = {}
        self._json = {c.name for c in table.c if isinstance(c.type, JSON)}

    def _key(self, key: Mapping[str, Any]) -> dict[str, Any]:
        return {f"k_{k}": key[k] for k in self.key}

    def insert(self, session: Session, rows: dict[str, Any] | list[dict[str, Any]]) -> None:
        many = [rows] if isinstance(rows, dict) else rows
        columns = self._insert.columns
        self._insert.execute(session, [tuple(r.get(c) for c in columns) for r in many])

    def get(self, session: Session, **key: Any) -> Row[Any] | None:
        return session.connection().execute(self._select, self._key(key)).one_or_none()

    def delete(self, session: Session, **key: Any) -> None:
        session.connection().execute(self._delete, self._key(key))

    def update(self, session: Session, key: Mapping[str, Any], **values: Any) -> None:
        columns = tuple(sorted(values))
        session.connection().execute(
            self._update_statement(columns),
            {**self._key(key), **{f"v_{c}": v for c, v in values.items()}},
        )

    # -- a batch's rows in memory (single-column keys) ---------------------------------

    def load(self, session: Session, keys: list[Any]) -> dict[Any, dict[str, Any]]:
        """The rows with these keys, by key, as dicts (one SELECT per 500 keys:
        `select_in`)."""
        (column,) = self.key
        found: dict[Any, dict[str, Any]] = {}
        for start in range(0, len(keys), 500):
            for row in self.select_in(session, {column: keys[start : start + 500]}):
                found[row[column]] = row
        return found

    def select_in(self, session: Session, values: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """The rows whose every named column is one of its values, as dicts, in one
        SELECT on the driver's connection (SQLAlchemy's compilation of an expanding IN
        cost more than the query); at most 500 values in all (SQLite's variables). JSON
        columns come back as their JSON text: decoding every one of them was most of the
        cost, and most are never read (`parsed` decodes one when it is)."""
        if not all(values.values()):
            return []
        connection = session.connection()
        driver = driver_of(connection)
        postgres = connection.dialect.name == "postgresql"
        sql = self._select_sql(connection.dialect, tuple(values))
        if postgres:
            # A load by key is best served by the key's index, always. PostgreSQL's
            # planner decides from statistics that autovacuum refreshes at most once a
            # minute; a view that grew by thousands of rows since looked small, and each
            # chunk scanned the whole table instead: ~480 ms per 500 keys at 100,000
            # vehicles (importing them took 5x as long as on SQLite).
            driver.execute("SET LOCAL enable_seqscan = off")
            rows = driver.execute(sql, tuple(values.values())).fetchall()
            driver.execute("RESET enable_seqscan")
        else:
            marks = [", ".join("?" * len(v)) for v in values.values()]
            flat = [value for listed in values.values() for value in listed]
            cursor = driver.execute(sql.format(*marks), flat)
            # SQLITE_JSON: the rows as one JSON array, one row stepped (values_statements)
            rows = decode_json(cursor.fetchone()[0]) if SQLITE_JSON else cursor.fetchall()
        names = [c.name for c in self.table.c]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _select_sql(self, dialect: Dialect, columns: tuple[str, ...]) -> str:
        found = self._loads.get((dialect.name, columns))
        if found is None:
            quote = dialect.identifier_preparer.quote
            shown = ", ".join(
                f"CAST({quote(c.name)} AS TEXT)" if isinstance(c.type, JSON) else quote(c.name)
                for c in self.table.c
            )
            postgres = dialect.name == "postgresql"
            if not postgres and SQLITE_JSON:
                shown = f"json_group_array(json_array({shown}))"
            where = " AND ".join(
                f"{quote(c)} = ANY(%s)" if postgres else f"{quote(c)} IN ({{}})" for c in columns
            )
            found = self._loads[dialect.name, columns] = (
                f"SELECT {shown} FROM {quote(self.table.name)} WHERE {where}"
            )
        return found

    @staticmethod
    def parsed(row: dict[str, Any], column: str) -> Any:
        """A JSON column of a `load`ed row, decoded (once)."""
        value = row[column]
        if isinstance(value, str):
            value = row[column] = decode_json(value)
        return value

    def write_changes(self, session: Session, changes: list[tuple[Any, dict[str, Any]]]) -> None:
        """UPDATE each (key, changed values), grouped by the set of columns changed (JSON
        columns encoded here, see DriverInsert): one `execute_rows` per group. A key of
        several columns is given as a tuple of them."""
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        composite = len(self.key) > 1
        for key, values in changes:
            columns = tuple(sorted(values))
            groups.setdefault(columns, []).append(
                (
                    *(json_text(values[c]) if c in self._json else values[c] for c in columns),
                    *(key if composite else (key,)),
                )
            )
        connection = session.connection()
        for columns, rows in groups.items():
            execute_rows(connection, self._update_sql(session, columns), rows)

    def _update_sql(self, session: Session, columns: tuple[str, ...]) -> str:
        """Parameters: the changed columns, then the key's columns."""
        found = self._update_texts.get(columns)
        if found is None:
            dialect = session.get_bind().dialect
            quote = dialect.identifier_preparer.quote
            table = quote(self.table.name)
            keys = [f"muto_key{i}" for i in range(len(self.key))]
            if dialect.name == "postgresql":
                names = ", ".join([*(quote(c) for c in columns), *keys])
                found = (
                    f"UPDATE {table} "
                    f"SET {', '.join(f'{quote(c)} = v.{quote(c)}' for c in columns)} "
                    f"FROM unnest({arrays(self.table, (*columns, *self.key), dialect)}) "
                    f"AS v({names}) WHERE "
                    + " AND ".join(
                        f"{table}.{quote(k)} = v.{n}" for k, n in zip(self.key, keys, strict=True)
                    )
                )
            else:  # VALUES names its columns column1, column2, ...
                found = (
                    f"UPDATE {table} "
                    + "SET "
                    + ", ".join(f"{quote(c)} = v.column{i}" for i, c in enumerate(columns, 1))
                    + " FROM (VALUES {rows}) AS v WHERE "
                    + " AND ".join(
                        f"{table}.{quote(k)} = v.column{i}"
                        for i, k in enumerate(self.key, len(columns) + 1)
                    )
                )
            if self.keep is not None:
                column, value = self.keep
                found += f" AND {table}.{quote(column)} != '{value.replace(chr(39), chr(39) * 2)}'"
            self._update_texts[columns] = found
        return found

    def delete_keys(self, session: Session, keys: list[Any]) -> None:
        if keys:
            (column,) = self.key
            session.connection().execute(self._delete, [{f"k_{column}": k} for k in keys])

    def _update_statement(self, columns: tuple[str, ...]) -> Update:
        statement = self._updates.get(columns)
        if statement is None:
            statement = self._updates[columns] = (
                self.table.update()
                .where(self._where)
                .values({c: bindparam(f"v_{c}") for c in columns})
            )
        return statement
