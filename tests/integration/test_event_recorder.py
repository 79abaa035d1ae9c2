"""The event recorder saves only in a transaction of its own: the library's save inside a
caller's session would skip the version check (`read_versions`), so it is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from eventsourcing.persistence import ProgrammingError

from muto.cloud.eventlog import EventLog
from muto.cloud.recorder import EventRecorder
from tests.support.spine import sqlite_settings


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
