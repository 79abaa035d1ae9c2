"""The projector reads this process's latest records from memory (eventlog.Recent), and
only a run without a hole: where another process stored a record in between, the log is
read instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from muto.cloud.commands import register_vehicle
from muto.cloud.eventlog import EventLog, Recent
from muto.cloud.writer import Writer
from tests.support.spine import cause, registration, sqlite_settings


def stored(log: EventLog) -> list[tuple[Any, ...]]:
    return [
        (n.id, n.originator_id, n.originator_version, n.topic, bytes(n.state))
        for n in log.recorder.select_notifications(0, 100, inclusive_of_start=False)
    ]


def shown(records: Any) -> list[tuple[Any, ...]]:
    return [(n.id, n.originator_id, n.originator_version, n.topic, bytes(n.state)) for n in records]


def register(log: EventLog, *vehicle_ids: str) -> None:
    writer = Writer(log)
    writer.start()
    for vehicle_id in vehicle_ids:
        writer.execute(register_vehicle(registration(vehicle_id), cause()))
    writer.close()


def test_own_records_are_served_from_memory_as_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog.open(sqlite_settings(tmp_path))
    try:
        register(log, "v1", "v2", "v3")
        expected = stored(log)
        assert [r[0] for r in expected] == [1, 2, 3]

        def no_query(*_: Any, **__: Any) -> Any:
            raise AssertionError("read from the log")

        monkeypatch.setattr(log.recorder, "select_notifications", no_query)
        assert shown(log.select(0, 100)) == expected
        assert shown(log.select(1, 1)) == expected[1:2]
        assert shown(log.select(0, 100, until=2)) == expected[:2]
        assert [log.decode(n) for n in log.select(0, 100)] == [
            log.decode(n) for n in log.recent.run(0, 100, None)
        ]
    finally:
        log.close()


def test_a_record_another_process_stored_is_read_from_the_log(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    ours, theirs = EventLog.open(settings), EventLog.open(settings)
    try:
        register(ours, "v1")
        register(theirs, "v2")  # position 2: not in our memory
        register(ours, "v3")
        # Position 2 is not ours: memory serves no run across it, so that a short run
        # always means the end of what was stored (the projector stops there).
        assert ours.recent.run(0, 100, None) == []
        assert [n.id for n in ours.recent.run(2, 100, None)] == [3]
        assert [n.id for n in ours.select(0, 100)] == [1, 2, 3]
        whole: list[tuple[Any, ...]] = []
        after = 0
        while found := ours.select(after, 100):  # as the projector steps
            whole += shown(found)
            after = found[-1].id
        assert whole == stored(ours)
        assert [r[0] for r in whole] == [1, 2, 3]
    finally:
        ours.close()
        theirs.close()


def test_memory_keeps_the_latest_records_only() -> None:
    class Recording:
        def __init__(self, position: int) -> None:
            self.notification = type("N", (), {"id": position})()

    recent = Recent(size=3)
    recent.add([Recording(p) for p in range(1, 6)])  # type: ignore[misc]
    assert [n.id for n in recent.run(0, 10, None)] == []  # 1 and 2 are gone
    assert [n.id for n in recent.run(2, 10, None)] == [3, 4, 5]
    assert [n.id for n in recent.run(2, 2, None)] == [3, 4]
    assert [n.id for n in recent.run(2, 10, 4)] == [3, 4]
