"""The cloud's side of the audit: it owns the event log, so it opens it for the audit
(read-only) and names its tables. muto/audit reads only through the EventSource port
(muto/projections/source.py); the command line (muto/fleetctl/audit.py) and the API
(muto/cloud/api/audit.py) compose the two here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import Notification, PersistenceError
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from muto.audit.source import AuditError, read_only_url
from muto.audit.verify import Finding, no_event_table, read_only_views_url, verify
from muto.cloud.eventlog import EventLog
from muto.cloud.settings import Settings
from muto.projections.source import EventSource

# eventsourcing-sqlalchemy prefixes the table with the application's name
EVENTS_TABLE = f"{EventLog.name}_events"
# What a database that cannot be read raises: SQLAlchemy's errors, and the event store's
# own (eventsourcing wraps SQLAlchemy's in them).
UNREADABLE = (SQLAlchemyError, PersistenceError)


@contextmanager
def reading(*urls: str) -> Iterator[None]:
    """A database that cannot be read (none by that name, nothing listening, a file that
    is no database) as an AuditError that names it, without its password: the audit's
    exit status 2, never a traceback; 1 is kept for a broken chain."""
    try:
        yield
    except UNREADABLE as exc:
        raise AuditError(f"cannot read {_named(urls)}: {_reason(exc, urls)}") from exc


def _named(urls: Sequence[str]) -> str:
    # Without its query: the connection options settings.py adds are noise here.
    plain = (make_url(u).set(query={}).render_as_string(hide_password=True) for u in urls)
    shown = list(dict.fromkeys(plain))
    return f"the database{'s' if len(shown) > 1 else ''} at {' and '.join(shown)}"


def _reason(exc: BaseException, urls: Sequence[str]) -> str:
    """The driver's own words (the first line: SQLAlchemy adds the statement and a link)."""
    cause: BaseException = exc
    if isinstance(cause, PersistenceError):  # raised `from` SQLAlchemy's, which it holds
        wrapped = cause.__cause__ or next(iter(cause.args), None)
        cause = wrapped if isinstance(wrapped, BaseException) else cause
    if isinstance(cause, DBAPIError) and cause.orig is not None:
        cause = cause.orig
    said = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    for password in {make_url(u).password for u in urls} - {None}:
        said = said.replace(str(password), "***")  # should a driver ever echo it
    return said or type(cause).__name__


def _tables(url: str) -> set[str]:
    """The tables of the database at `url`, opened read-only: an AuditError naming the
    database when it cannot be read (SQLite reads a file only at its first statement)."""
    with reading(url):
        engine = create_engine(read_only_url(url))
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()


def open_event_log(events_url: str) -> EventLog:
    """The control plane's event log, read-only, without creating any table: an
    AuditError when its database cannot be read or holds no event table."""
    if EVENTS_TABLE not in _tables(events_url):
        raise no_event_table(EVENTS_TABLE)
    with reading(events_url):
        return EventLog(
            env={
                "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
                "SQLALCHEMY_URL": read_only_url(events_url),
                "CREATE_TABLE": "n",
            }
        )


class ReadLog:
    """The event log as the audit reads it (EventSource): a database that stops
    answering midway is an AuditError that names it too."""

    def __init__(self, log: EventLog, url: str) -> None:
        self.log = log
        self.url = url

    def position(self) -> int:
        with reading(self.url):
            return self.log.position()

    def select(self, after: int, limit: int, until: int | None = None) -> Sequence[Notification]:
        with reading(self.url):
            return self.log.select(after, limit, until)

    def decode(self, record: Notification) -> Any:
        return self.log.decode(record)


def stored_settings(settings: Settings) -> Settings:
    if settings.is_memory:
        raise AuditError("an in-memory control plane keeps no log to audit")
    return settings


def verify_chain(settings: Settings, anchors: Mapping[int, str] = {}) -> Finding:
    """`muto audit verify` on the control plane's databases (both opened read-only)."""
    found = stored_settings(settings)
    return verify(found.events_url, found.views_url, EVENTS_TABLE, anchors)


class LocalAudit:
    """The audit's backend when it reads the databases itself (muto.audit.cli.Backend):
    a database it cannot read is an AuditError (exit 2), as a missing log is."""

    def __init__(self, settings: Settings) -> None:
        self.settings = stored_settings(settings)
        self._log: ReadLog | None = None

    def log(self, vehicle: str | None = None, rollout: str | None = None) -> EventSource:
        """The whole log: the reader picks a story's records itself."""
        if self._log is None:
            url = self.settings.events_url
            self._log = ReadLog(open_event_log(url), url)
        return self._log

    def verify(self, anchors: Mapping[int, str]) -> Finding:
        read_only_url(self.settings.events_url)  # a file not there: the log, then
        read_only_views_url(self.settings.views_url)  # the chain beside it, said so
        urls = dict.fromkeys((self.settings.events_url, self.settings.views_url))
        for url in urls:  # which one cannot be read, when one cannot
            _tables(url)
        with reading(*urls):  # or stops answering midway
            return verify_chain(self.settings, anchors)

    def close(self) -> None:
        if self._log is not None:
            self._log.log.close()


class Decoder:
    """Turns a stored record into its domain event the way the control plane does (the
    same mapper: transcodings and upcasters), for records fetched over the API."""

    def __init__(self) -> None:
        self._log = EventLog(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})

    def __call__(self, record: Notification) -> Any:
        return self._log.mapper.to_domain_event(record)
