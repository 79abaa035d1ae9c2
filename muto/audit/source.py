"""Reading the event log for an audit: decoded into plain entries.

The audit reads through the port `EventSource` (muto/projections/source.py): the event
log itself, opened read-only by whoever composes the audit (muto/cloud/auditing.py), or
a control plane's API (muto/fleetctl/audit.py). The audit never writes to the log: on
SQLite the file is opened with `mode=ro`; on PostgreSQL every transaction is read-only
(`default_transaction_read_only`), so even a bug here could not alter the evidence it
reports on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from eventsourcing.persistence import Notification
from sqlalchemy.engine import make_url

from muto.domain import instants
from muto.projections.base import event_data, event_type
from muto.projections.source import EventSource

BATCH = 1000
# Event fields that are bookkeeping or promoted to an entry's own columns.
_PROMOTED = {"originator_topic", "actor", "correlation_id"}


class AuditError(Exception):
    """The audit cannot run (no log at that place, bad time, ...): exit status 2."""


class NoDatabase(AuditError):
    """No SQLite file at `path`: said as the event log missing, unless the caller knows
    the file holds something else (verify.read_only_views_url: the audit chain)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no event log at {path}")
        self.path = path


def read_only_url(url: str) -> str:
    """The same database, opened so that nothing can be written through it."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return url
        path = Path(database).resolve()
        if not path.exists():
            raise NoDatabase(path)
        return f"sqlite:///file:{quote(str(path))}?mode=ro&uri=true"
    if backend == "postgresql":
        options = parsed.query.get("options")
        extra = "-c default_transaction_read_only=on"
        merged = f"{options} {extra}" if isinstance(options, str) else extra
        return parsed.update_query_dict({"options": merged}).render_as_string(hide_password=False)
    return url


def select(
    log: EventSource, after: int, limit: int, until: int | None = None
) -> Sequence[Notification]:
    """`log.select`, or AuditError when a stored row cannot even be read as a record
    (a column the database holds is not what the event table's type says)."""
    try:
        return log.select(after, limit, until)
    except (ValueError, TypeError) as exc:  # a column's value its type cannot convert
        readable = _last_readable(log, after, until)
        raise AuditError(
            f"the record after position {readable} cannot be read ({type(exc).__name__}: "
            f"{exc}); check the log with `muto audit verify`"
        ) from exc


def _last_readable(log: EventSource, after: int, until: int | None) -> int:
    """The last position from `after` on that reads, record by record: the failing
    batch's bad row is the next one."""
    while True:
        try:
            found = log.select(after, 1, until)
        except (ValueError, TypeError):  # the row this walk is looking for
            return after
        if not found:
            return after
        after = found[0].id


class CheckedSource:
    """An EventSource whose unreadable rows are AuditErrors (exit status 2) that name
    the position, for code that reads the log directly (a replay's projection runner)."""

    def __init__(self, log: EventSource) -> None:
        self.log = log

    def position(self) -> int:
        return self.log.position()

    def select(self, after: int, limit: int, until: int | None = None) -> Sequence[Notification]:
        return select(self.log, after, limit, until)

    def decode(self, record: Notification) -> Any:
        return decode(self.log, record)


def records(log: EventSource, after: int = 0, until: int | None = None) -> Iterator[Notification]:
    """Stored records in log order, positions in (after, until], fetched in batches."""
    while True:
        batch = select(log, after, BATCH, until)
        yield from batch
        if len(batch) < BATCH:
            return
        after = batch[-1].id


@dataclass(frozen=True)
class Entry:
    """One stored event, as an auditor reads it."""

    position: int
    at: datetime
    type: str  # "Vehicle.DesiredStateAssigned"
    aggregate: str
    version: int
    actor: str
    correlation_id: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "at": self.at.isoformat(),
            "type": self.type,
            "aggregate": self.aggregate,
            "version": self.version,
            "actor": self.actor,
            "correlationId": self.correlation_id,
            "data": self.data,
        }


def decode(log: EventSource, record: Notification) -> Any:
    try:
        return log.decode(record)
    except Exception as exc:  # any decoding failure means the same: an unreadable row
        raise AuditError(
            f"the event at position {record.id} cannot be decoded ({type(exc).__name__}: "
            f"{exc}); check the log with `muto audit verify`"
        ) from exc


def to_entry(log: EventSource, record: Notification) -> Entry:
    event = decode(log, record)
    fields = event_data(event)
    data = msgspec.to_builtins(
        {k: v for k, v in fields.items() if k not in _PROMOTED},
        builtin_types=None,
        str_keys=True,
    )
    return Entry(
        position=record.id,
        at=event.timestamp,
        type=event_type(event),
        aggregate=str(record.originator_id),
        version=record.originator_version,
        actor=str(fields.get("actor", "")),
        correlation_id=str(fields.get("correlation_id", "")),
        data=data,
    )


def entries(
    log: EventSource,
    after: int = 0,
    until: int | None = None,
    keep: Callable[[Notification], bool] = lambda _: True,
) -> Iterator[Entry]:
    """Decoded entries; `keep` looks at the stored record first, so a story about one
    vehicle does not pay for decoding every release envelope in the log."""
    for record in records(log, after, until):
        if keep(record):
            yield to_entry(log, record)


def qualname(record: Notification) -> str:
    """`Vehicle.Registered` from the stored topic `muto.domain.model.vehicle:...`."""
    return record.topic.rpartition(":")[2]


def parse_instant(text: str) -> datetime:
    """A time the operator named (muto.domain.instants: with its offset)."""
    try:
        return instants.parse_instant(text)
    except instants.InstantError as exc:
        raise AuditError(str(exc)) from None


def position_at(log: EventSource, instant: datetime) -> int:
    """The log as it stood at `instant`: the longest prefix of events stamped at or
    before it. Stamps are taken when an event is created, so with several writers a
    later position can carry a slightly earlier stamp; stopping at the first event
    after `instant` never includes anything that happened later."""
    reached = 0
    for record in records(log):
        stamped: datetime = decode(log, record).timestamp
        if stamped > instant:
            break
        reached = record.id
    return reached
