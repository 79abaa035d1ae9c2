"""The event recorder saves only in a transaction of its own: the library's save inside a
caller's session would skip the version check (`read_versions`), so it is refused. On
SQLite its saves share one connection, kept between them and replaced when it breaks."""

from __future__ import annotations

import threading
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.persistence import PersistenceError, ProgrammingError
from sqlalchemy import Engine

from muto.cloud.commands import register_vehicle
from muto.cloud.eventlog import EventLog
from muto.cloud.recorder import EventRecorder
from muto.cloud.settings import Settings
from muto.cloud.writer import Writer
from tests.support.spine import cause, registration, sqlite_settings


def test_a_save_inside_a_callers_session_is_refused(tmp_path: Path) -> None:
    log = EventLog.open(sqlite_settings(tmp_path))
    try:
        recorder = log.recorder
        assert isinstance(recorder, EventRecorder)
        with recorder.transaction(commit=True) as session, pytest.raises(ProgrammingError):
            recorder.insert_events([], session=session)
        assert log.position() == 0
    finally:
        log.close()


def test_sqlite_saves_keep_one_connection_and_a_broken_one_is_replaced(tmp_path: Path) -> None:
    """On SQLite saves run on one connection kept between them (no pool checkout per
    save); when it breaks (here closed underneath), that save fails with the library's
    error and the next one runs on a fresh connection."""
    log = EventLog.open(sqlite_settings(tmp_path))
    writer = Writer(log)
    writer.start()
    try:
        recorder = log.recorder
        assert isinstance(recorder, EventRecorder)
        engine = recorder.datastore.engine
        assert isinstance(engine, Engine)
        for i in range(3):
            writer.execute(register_vehicle(registration(f"v{i}"), cause()))
        kept = recorder._kept
        assert kept is not None
        writer.execute(register_vehicle(registration("v3"), cause()))
        assert recorder._kept is kept  # the same connection, save after save
        assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]

        kept.driver_connection.close()
        with pytest.raises(PersistenceError):
            writer.execute(register_vehicle(registration("lost"), cause()))
        assert recorder._kept is None
        written = writer.execute(register_vehicle(registration("v4"), cause()))
        assert written.value == (True, 1)
        assert recorder._kept is not None and recorder._kept is not kept
        assert log.position() == 5
        assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    finally:
        writer.close()
        log.close()
    assert recorder._kept is None  # closed with the log


def test_reading_the_log_gives_what_the_library_reads(store_settings: Settings) -> None:
    """The recorder reads notifications on the driver's connection; every window of the
    log (start, stop, limit, inclusive or not) holds the same records, ids as UUIDs, as
    the library's own reading, and no connection stays checked out."""
    log = EventLog.open(store_settings)
    writer = Writer(log)
    writer.start()
    try:
        for i in range(7):
            writer.execute(register_vehicle(registration(f"v{i}"), cause()))
        recorder = log.recorder
        assert isinstance(recorder, EventRecorder)
        engine = recorder.datastore.engine
        assert isinstance(engine, Engine)
        library = super(EventRecorder, recorder).select_notifications
        busy = engine.pool.checkedout()  # type: ignore[attr-defined]
        for start, limit, stop, inclusive in [
            (None, 100, None, True),
            (1, 3, None, True),
            (1, 3, None, False),
            (3, 100, 5, True),
            (3, 2, 6, False),
            (7, 10, None, False),
            (2, 10, 1, True),
        ]:
            window = {"start": start, "limit": limit, "stop": stop}
            ours = recorder.select_notifications(**window, inclusive_of_start=inclusive)
            theirs = library(**window, inclusive_of_start=inclusive)
            assert ours == theirs, window
            assert all(isinstance(n.originator_id, UUID) for n in ours)
        assert [n.id for n in recorder.select_notifications(None, 100)] == list(range(1, 8))
        assert engine.pool.checkedout() == busy  # type: ignore[attr-defined]
    finally:
        writer.close()
        log.close()


def test_a_read_does_not_wait_for_a_save_on_sqlite(tmp_path: Path) -> None:
    """A save holds the library's SQLite write lock; reading the log (the records, the
    last position) does not take it, as the library's reads do not: a projector reads
    while the writer saves."""
    log = EventLog.open(sqlite_settings(tmp_path))
    writer = Writer(log)
    writer.start()
    try:
        writer.execute(register_vehicle(registration("v0"), cause()))
        recorder = log.recorder
        lock = recorder.datastore.write_lock  # type: ignore[attr-defined]
        assert lock is not None
        found: list[int | None] = []

        def read() -> None:
            found.extend(n.id for n in recorder.select_notifications(None, 10))
            found.append(recorder.max_notification_id())

        with lock:  # a save in progress; the reads run beside it, bounded
            reader = threading.Thread(target=read)
            reader.start()
            reader.join(timeout=10)
            waited = reader.is_alive()
        reader.join()
        assert not waited, "a read waited for the save's write lock"
        assert found == [1, 1]
    finally:
        writer.close()
        log.close()
