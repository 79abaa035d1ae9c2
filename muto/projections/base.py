"""What a projection is: tables, and a routing table from event type to an update.

A projection never reads the event store; it sees each event once, in log order,
inside the transaction that also records its position (see runner.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import BigInteger, Integer, MetaData, Table
from sqlalchemy.orm import Session

# Keys every event carries that are bookkeeping, not content.
_BOOKKEEPING = {"originator_id", "originator_version", "timestamp"}


class Event(Protocol):
    originator_id: Any
    originator_version: int
    timestamp: datetime


Update = Callable[[Session, Any, int], None]


def event_type(event: object) -> str:
    """`Vehicle.ReconcileReported`: the aggregate and the event, as stored."""
    return type(event).__qualname__


_ID_TEXTS: dict[Any, str] = {}
_ID_TEXTS_KEPT = 65_536


# A position in the event log, as a column: 64 bits like the log's own ids (a 32-bit
# column would stop its view at the 2,147,483,648th event). On SQLite an INTEGER, whose
# primary key is then the table's rowid (BIGINT's would add an index beside it).
LogPosition = BigInteger().with_variant(Integer(), "sqlite")


def id_text(aggregate_id: Any) -> str:
    """`str(aggregate_id)`, remembered: a UUID's `str` is Python code (~1.3 µs), which the
    audit views paid for every event. A pure function of its argument, so the memo
    can never be stale; it is emptied when full."""
    found = _ID_TEXTS.get(aggregate_id)
    if found is None:
        if len(_ID_TEXTS) >= _ID_TEXTS_KEPT:
            _ID_TEXTS.clear()
        found = _ID_TEXTS[aggregate_id] = str(aggregate_id)
    return found


def event_data(event: object) -> dict[str, Any]:
    return {k: v for k, v in vars(event).items() if k not in _BOOKKEEPING}


class Announcer:
    """Tells listeners (in-process caches) which keys a batch changed, once the batch has
    committed: told earlier, a request could re-read the old row and remember it again.
    Holders are told the same keys just before the commit (`committing`): from then
    until the listeners are told, a cache neither answers for those keys nor remembers
    them, so nothing that learns of the commit from the database (the notifier, another
    reader) can meet the old answer in memory in between. A batch that fails tells the
    listeners of what it held, which releases it.

    On PostgreSQL the runner also publishes each key on the store's NOTIFY channel as
    `<topic> <key>`, inside the batch's transaction (delivered on commit), so that the
    caches of every other process on the database hear it too (`tell`)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.listeners: list[Callable[[str], None]] = []
        self.holders: list[Callable[[str], None]] = []
        self._pending: list[str] = []
        self._held: list[str] = []

    def append(self, listener: Callable[[str], None]) -> None:
        self.listeners.append(listener)

    def note(self, key: str) -> None:
        self._pending.append(key)

    @property
    def pending(self) -> list[str]:
        return list(self._pending)

    def committing(self) -> None:
        self._held = list(self._pending)
        for key in self._held:
            for holder in self.holders:
                holder(key)

    def committed(self) -> None:
        pending, self._pending, self._held = self._pending, [], []
        for key in pending:
            self.tell(key)

    def tell(self, key: str) -> None:
        for listener in self.listeners:
            listener(key)

    def discard(self) -> None:
        held, self._held = self._held, []
        self._pending.clear()
        for key in held:
            self.tell(key)


class Projection:
    """Subclasses declare `name`, define their tables in `define`, and route events
    by type in `updates`."""

    name: str = ""
    # What the rows mean: raise it when the rows the same events build change (a
    # status read anew) with the same columns. A store whose view was built by another
    # version rebuilds it from the log when it opens (ViewStore.reshape); a changed
    # column needs no raise.
    version: int = 1

    def __init__(self, metadata: MetaData) -> None:
        self.tables: list[Table] = self.define(metadata)
        self._routes: Mapping[str, Update] = self.updates

    def define(self, metadata: MetaData) -> list[Table]:
        raise NotImplementedError

    @property
    def updates(self) -> Mapping[str, Update]:
        raise NotImplementedError

    @property
    def reads(self) -> frozenset[str] | None:
        """The event types this view reads, or None for every event: the runner gives
        it no others (a report-heavy log then costs the views that ignore reports
        nothing). By default the routed types of a view that keeps this `apply`; a
        view that overrides `apply` or takes `apply_batch` gets every event unless it
        says otherwise."""
        if type(self).apply is Projection.apply and not hasattr(self, "apply_batch"):
            return frozenset(self._routes)
        return None

    def apply(self, session: Session, event: object, position: int) -> None:
        update = self._routes.get(event_type(event))
        if update is not None:
            update(session, event, position)

    def flush(self, session: Session) -> None:
        """Called once per batch, before positions are recorded, in the same
        transaction: projections that buffer rows write them here."""

    def discard(self) -> None:
        """The batch's transaction failed: forget anything buffered for `flush` (a
        subclass that buffers calls this too)."""
        for announcer in self.announcers:
            announcer.discard()

    @property
    def announcers(self) -> list[Announcer]:
        """What this projection tells caches about (see Announcer)."""
        return []

    def committing(self) -> None:
        """The batch's transaction is about to commit: hold what it changes."""
        for announcer in self.announcers:
            announcer.committing()

    def committed(self) -> None:
        """The batch's transaction committed: announce what it changed."""
        for announcer in self.announcers:
            announcer.committed()

    def clear(self, session: Session) -> None:
        for table in reversed(self.tables):
            session.execute(table.delete())
