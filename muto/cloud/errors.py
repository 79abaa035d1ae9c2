"""Application errors, each mapped to one HTTP status by the API, and the database
errors that mean "not now" (503, retried) rather than a bug (500)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any


class AppError(Exception):
    status = 500
    code = "internal"
    headers: dict[str, str] | None = None  # sent with the error (Retry-After, ...)

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    """Another write won (optimistic concurrency), or the request contradicts stored
    history (a release re-registered with another digest)."""

    status = 409
    code = "conflict"


class Invalid(AppError):
    status = 422
    code = "invalid"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


# What the database says when it cannot take a request now, by SQLSTATE (PostgreSQL,
# appendix A: a code or its class's prefix) and by SQLite's error name: read-only after a
# failover, a full disk, a shutdown, a lost link. Whatever wrapper carries the driver's
# error (eventsourcing's InternalError for a read-only INSERT, SQLAlchemy's DBAPIError,
# psycopg's own), the request is answered 503 and retried, never a 500.
REFUSALS: tuple[tuple[str, str], ...] = (
    ("25006", "the database is read-only or in recovery (a standby)"),
    ("53100", "the database's disk is full"),
    ("53", "the database is out of resources"),
    ("57P0", "the database is shutting down or restarting"),
    ("08", "the connection to the database failed"),
    ("SQLITE_FULL", "the database's disk is full"),
    ("SQLITE_READONLY", "the database is read-only"),
)
CHAIN_LIMIT = 8  # wrappers in a chain are three or four deep


def database_refusal(exc: BaseException) -> str | None:
    """Why the database cannot be used now, or None when `exc` is not that (a bug, a
    constraint: a 500 or its own status). Any driver-level OperationalError counts (a
    lock timeout, an I/O error), with a plain reason when no code says more."""
    operational, kinds = False, _operational()
    for link in _chain(exc):
        state = getattr(link, "sqlstate", None) or getattr(link, "sqlite_errorname", None)
        if isinstance(state, str):
            for prefix, why in REFUSALS:
                if state.startswith(prefix):
                    return why
        operational = operational or isinstance(link, kinds)
    return "the database is busy or unreachable" if operational else None


def first_line(exc: BaseException) -> str:
    """The driver's own words for a log line: the innermost error's first line, without
    the SQL and parameters SQLAlchemy appends."""
    innermost = list(_chain(exc))[-1]
    text = str(innermost).strip().splitlines()
    return f"{type(innermost).__name__}: {text[0] if text else ''}"


def _operational() -> tuple[type[BaseException], ...]:
    """The drivers' and wrappers' OperationalError, imported on first use: light commands
    import this module and never touch a database."""
    import psycopg
    import sqlalchemy.exc
    from eventsourcing.persistence import OperationalError

    return (
        sqlalchemy.exc.OperationalError,
        OperationalError,
        psycopg.OperationalError,
        sqlite3.OperationalError,
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps: SQLAlchemy's `orig`, else its explicit cause (`raise
    .. from`, as every wrapper raises). Not the context: a bug met while handling a
    database error is still a bug."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < CHAIN_LIMIT:
        seen.add(id(link))
        yield link
        orig = getattr(link, "orig", None)
        link = orig if isinstance(orig, BaseException) else link.__cause__
