"""The event recorder saves only in a transaction of its own: the library's save inside a
caller's session would skip the version check (`read_versions`), so it is refused. On
SQLite its saves share one connection, kept between them and replaced when it breaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from eventsourcing.persistence import PersistenceError, ProgrammingError
from sqlalchemy import Engine

from muto.cloud.commands import register_vehicle
from muto.cloud.eventlog import EventLog
from muto.cloud.recorder import EventRecorder
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
