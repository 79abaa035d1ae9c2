"""Which database errors mean "not now" (503, retried) rather than a bug (500): one rule,
by SQLSTATE or SQLite's error name, whatever wrapper carries the driver's error. A
read-only PostgreSQL raised eventsourcing's InternalError, which the API answered 500
(review r1, finding 3)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg.errors
import pytest
import sqlalchemy.exc
from eventsourcing.persistence import IntegrityError as StoreIntegrityError
from eventsourcing.persistence import InternalError as StoreInternalError
from eventsourcing.persistence import OperationalError as StoreOperationalError

from muto.cloud.errors import database_refusal, first_line


def wrapped(driver: Exception, *wrappers: type[Exception]) -> Exception:
    """`driver` raised through `wrappers` (innermost first) as each library raises it:
    SQLAlchemy keeps the driver's error as `orig`, eventsourcing as the cause."""
    caught: Exception = driver
    for wrapper in wrappers:
        try:
            try:
                raise caught
            except Exception as exc:
                if issubclass(wrapper, sqlalchemy.exc.DBAPIError):
                    raise wrapper("INSERT INTO muto_events ...", {}, exc) from exc
                raise wrapper(exc) from exc
        except Exception as outer:
            caught = outer
    return caught


READ_ONLY = "cannot execute INSERT in a read-only transaction"


@pytest.mark.parametrize(
    ("error", "why"),
    [
        # psycopg -> eventsourcing (the event store): the reviewer's 500
        (
            wrapped(psycopg.errors.ReadOnlySqlTransaction(READ_ONLY), StoreInternalError),
            "the database is read-only or in recovery (a standby)",
        ),
        # psycopg -> SQLAlchemy -> eventsourcing (the views)
        (
            wrapped(
                psycopg.errors.ReadOnlySqlTransaction(READ_ONLY),
                sqlalchemy.exc.InternalError,
                StoreInternalError,
            ),
            "the database is read-only or in recovery (a standby)",
        ),
        (
            wrapped(psycopg.errors.DiskFull("could not extend file"), StoreOperationalError),
            "the database's disk is full",
        ),
        (
            wrapped(psycopg.errors.OutOfMemory("out of memory"), sqlalchemy.exc.OperationalError),
            "the database is out of resources",
        ),
        (
            wrapped(psycopg.errors.AdminShutdown("terminating connection"), StoreOperationalError),
            "the database is shutting down or restarting",
        ),
        (
            wrapped(psycopg.errors.ConnectionFailure("connection failure")),
            "the connection to the database failed",
        ),
        # a lost link has no SQLSTATE: still an OperationalError, still not now
        (
            wrapped(psycopg.OperationalError("the connection is lost"), StoreOperationalError),
            "the database is busy or unreachable",
        ),
    ],
)
def test_a_database_that_cannot_take_the_request_now_is_a_refusal(
    error: Exception, why: str
) -> None:
    assert database_refusal(error) == why


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("SQLITE_FULL", "the database's disk is full"),
        ("SQLITE_READONLY", "the database is read-only"),
        ("SQLITE_BUSY", "the database is busy or unreachable"),
    ],
)
def test_sqlite_says_so_by_its_error_name(name: str, why: str) -> None:
    driver = sqlite3.OperationalError("database or disk is full")
    driver.sqlite_errorname = name
    assert database_refusal(wrapped(driver, StoreOperationalError)) == why


def test_a_real_sqlite_refusal_carries_its_name(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as raised:
        read_only.execute("INSERT INTO t VALUES (1)")
    read_only.close()
    assert database_refusal(raised.value) == "the database is read-only"


@pytest.mark.parametrize(
    "error",
    [
        wrapped(psycopg.errors.UniqueViolation("duplicate key"), StoreIntegrityError),
        wrapped(psycopg.errors.UndefinedTable("no such table"), sqlalchemy.exc.ProgrammingError),
        wrapped(psycopg.errors.DivisionByZero("division by zero"), StoreInternalError),
        KeyError("vehicle"),
    ],
)
def test_a_bug_is_not_a_refusal(error: Exception) -> None:
    assert database_refusal(error) is None


def test_a_bug_met_while_handling_a_refusal_is_still_a_bug() -> None:
    """Only an explicit cause is followed, never the context."""
    try:
        try:
            raise StoreOperationalError("connection lost")
        except StoreOperationalError:
            raise KeyError("vehicle") from None
    except KeyError as exc:
        assert database_refusal(exc) is None


def test_the_log_line_is_the_drivers_first_line() -> None:
    error = wrapped(
        psycopg.errors.ReadOnlySqlTransaction(f"{READ_ONLY}\nCONTEXT: SQL statement"),
        sqlalchemy.exc.InternalError,
        StoreInternalError,
    )
    assert first_line(error) == f"ReadOnlySqlTransaction: {READ_ONLY}"
