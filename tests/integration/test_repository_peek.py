"""`WriterRepository.peek`: a reader (the rollout controller) looks at the current
aggregate without the deep copy `get` takes, and still sees what another process stored."""

from __future__ import annotations

from pathlib import Path

from muto.cloud.commands import record_reconcile, register_vehicle
from muto.cloud.eventlog import EventLog
from muto.cloud.writer import Writer
from muto.domain.model.vehicle import Vehicle
from tests.support.spine import OPERATOR, cause, reconcile_report, registration, sqlite_settings


def run(log: EventLog, *commands: object) -> None:
    writer = Writer(log)
    writer.start()
    try:
        for command in commands:
            writer.execute(command)  # type: ignore[arg-type]
    finally:
        writer.close()


def test_peek_reads_the_cached_aggregate_itself(tmp_path: Path) -> None:
    log = EventLog.open(sqlite_settings(tmp_path))
    try:
        run(log, register_vehicle(registration("v1"), cause()))
        vehicle_id = Vehicle.create_id("v1")
        cached = log.writer_repository.cache.get(vehicle_id)  # type: ignore[union-attr]
        assert log.writer_repository.peek(vehicle_id, lambda v: v) is cached
        assert log.writer_repository.get(vehicle_id) is not cached  # `get` copies
        run(log, record_reconcile(reconcile_report("v1", "r1"), OPERATOR))
        assert log.writer_repository.peek(vehicle_id, lambda v: v.version) == 2
    finally:
        log.close()


def test_with_fresh_reads_peek_sees_another_process_and_leaves_the_cache_alone(
    tmp_path: Path,
) -> None:
    settings = sqlite_settings(tmp_path)
    fresh = {**EventLog.cache_env(settings), **settings.event_store_env()}
    ours = EventLog(env={**fresh, EventLog.FRESH_READS: "y"})
    theirs = EventLog.open(settings)
    try:
        run(ours, register_vehicle(registration("v1"), cause()))
        run(theirs, record_reconcile(reconcile_report("v1", "r1"), OPERATOR))
        vehicle_id = Vehicle.create_id("v1")
        assert ours.writer_repository.peek(vehicle_id, lambda v: v.version) == 2
        # The cache's aggregate is the writer's: peek projected a copy.
        assert ours.writer_repository.cache.get(vehicle_id).version == 1  # type: ignore[union-attr]
    finally:
        ours.close()
        theirs.close()
