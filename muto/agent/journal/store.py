"""Where journal records live: the `eventsourcing` library's recorders, on an SQLite file
(WAL, synchronous=FULL: a commit is on disk when `insert` returns) or in memory (POPO).

One stream (`JOURNAL_ID`); a record's originator version is its position, so a second
writer racing on a position gets `IntegrityError` instead of a fork. Derived-state
snapshots go to the library's separate snapshot recorder under the same id.

Records are read on SQLite through the recorder's own datastore (its connection, its
transaction), selecting only position and bytes: the recorder's `select_events` would
build a StoredEvent and parse the stream's UUID for every row, which was a third of a
full replay (docs/performance.md, *Journal replay from zero*).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.persistence import InfrastructureFactory, OperationalError, StoredEvent
from eventsourcing.sqlite import SQLiteAggregateRecorder
from eventsourcing.utils import Environment

from muto.agent.disk import disk_full

JOURNAL_ID = uuid5(NAMESPACE_URL, "muto:agent:journal")
PAGE = 5000
# SQLite's primary result codes (an extended code keeps them in its low byte).
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 10, 11, 13, 14, 26
# What opening needs on disk at most: the -shm index (32 KiB) and a few WAL frames.
SPACE_PROBE_BYTES = 64 * 1024


def sqlite_error(exc: BaseException) -> sqlite3.Error | None:
    """The SQLite error behind `exc`: raised as is, or wrapped by the library's
    datastore (its error types carry the original as their cause)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlite3.Error):
            return seen
        seen = seen.__cause__
    return None


def sqlite_code(exc: BaseException) -> int | None:
    """SQLite's primary result code behind `exc` (SQLITE_FULL, ...), or None."""
    found = sqlite_error(exc)
    code = getattr(found, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def out_of_space(exc: BaseException, directory: Path) -> bool:
    """Whether `exc` (from SQLite, on a database in `directory`) means the disk is full.
    SQLITE_FULL says so; an I/O error (e.g. SQLITE_IOERR_SHMSIZE: the -shm file could not
    grow) does not carry the OS's errno, so the file system is asked for the space instead."""
    code = sqlite_code(exc)
    if code == SQLITE_FULL:
        return True
    if code not in (SQLITE_IOERR, SQLITE_CANTOPEN):
        return False
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".space-probe-")
    except OSError as refused:
        return disk_full(refused)
    try:
        os.posix_fallocate(fd, 0, SPACE_PROBE_BYTES)
    except OSError as refused:
        return disk_full(refused)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return False


class RecordStore:
    def __init__(self, env: dict[str, str], *, reader: bool = False) -> None:
        # A reader (journal CLI, tests watching an agent) may open the file while the
        # agent is still creating its tables: until they exist it reads an empty journal.
        self._reader = reader
        self._factory = InfrastructureFactory.construct(Environment("journal", env))
        self._events = self._factory.application_recorder()
        self._snapshots = self._factory.aggregate_recorder("snapshots")

    @classmethod
    def sqlite(cls, path: Path, *, create: bool = True) -> RecordStore:
        if not create and not path.exists():
            raise FileNotFoundError(path)
        # A reader opens the file read-only: SQLite then never checkpoints the WAL into
        # the file nor deletes it on close, so inspecting a damaged journal (a bad frame
        # ends the log early) keeps the frames after it for whoever looks next.
        name = str(path) if create else f"{path.resolve().as_uri()}?mode=ro"
        return cls(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": name,
                "CREATE_TABLE": "y" if create else "n",
                "IS_SNAPSHOTTING_ENABLED": "y",
            },
            reader=not create,
        )

    @classmethod
    def memory(cls) -> RecordStore:
        return cls({"PERSISTENCE_MODULE": "eventsourcing.popo", "IS_SNAPSHOTTING_ENABLED": "y"})

    def _read(self, recorder: Any, **query: Any) -> Sequence[StoredEvent]:
        try:
            found: Sequence[StoredEvent] = recorder.select_events(JOURNAL_ID, **query)
        except OperationalError as exc:
            if self._reader and "no such table" in str(exc):
                return []
            raise
        return found

    def insert(self, records: Sequence[tuple[int, str, bytes]]) -> None:
        """(position, topic, bytes) rows, in one transaction."""
        self._events.insert_events(
            [
                StoredEvent(originator_id=JOURNAL_ID, originator_version=p, topic=t, state=s)
                for p, t, s in records
            ]
        )

    def select(self, after: int = 0, upto: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(position, stored bytes) with after < position <= upto, in order, read a page
        at a time."""
        read = self._sqlite_page if isinstance(self._events, SQLiteAggregateRecorder) else None
        while True:
            if read is not None:
                page = read(after, upto)
            else:
                events = self._read(self._events, gt=after, lte=upto, limit=PAGE)
                page = [(e.originator_version, e.state) for e in events]
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1][0]

    def _sqlite_page(self, after: int, upto: int | None) -> list[tuple[int, bytes]]:
        recorder = self._events
        assert isinstance(recorder, SQLiteAggregateRecorder)
        query = (
            f"SELECT originator_version, state FROM {recorder.events_table_name} "
            "WHERE originator_id=? AND originator_version>? AND originator_version<=? "
            "ORDER BY originator_version LIMIT ?"
        )
        last = upto if upto is not None else 2**63 - 1
        try:
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(query, (JOURNAL_ID.hex, after, last, PAGE))
                return [(row[0], row[1]) for row in cursor.fetchall()]
        except OperationalError as exc:  # the datastore raises the library's error types
            if self._reader and "no such table" in str(exc):
                return []
            raise

    def last_position(self) -> int:
        last = self._read(self._events, desc=True, limit=1)
        return last[0].originator_version if last else 0

    def snapshot(self, upto: int | None = None) -> StoredEvent | None:
        """The newest snapshot at or before `upto`."""
        found = self._read(self._snapshots, lte=upto, desc=True, limit=1)
        return found[0] if found else None

    def snapshots(self) -> Sequence[StoredEvent]:
        return self._snapshots.select_events(JOURNAL_ID)

    def put_snapshot(self, position: int, topic: str, state: bytes) -> None:
        self._snapshots.insert_events(
            [
                StoredEvent(
                    originator_id=JOURNAL_ID, originator_version=position, topic=topic, state=state
                )
            ]
        )

    def close(self) -> None:
        self._factory.close()
