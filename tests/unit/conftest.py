"""Fixtures the unit tests of the cloud's write path share: an in-memory event log and a
started Writer over it (a module may define its own `log`, which then takes precedence)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from muto.cloud.eventlog import EventLog
from muto.cloud.writer import Writer
from tests.support.spine import memory_settings


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    event_log = EventLog.open(memory_settings(tmp_path))
    yield event_log
    event_log.close()


@pytest.fixture
def writer(log: EventLog) -> Iterator[Writer]:
    w = Writer(log)
    w.start()
    yield w
    w.close()
