"""The Writer: group commit of concurrent commands, each failure kept with its command,
a lone command run on its waiting caller's thread, and a close() that finishes what was
queued.

The writer thread is held by a gate command while the test queues work behind it, so
batching is decided by what is queued, never by timing.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from muto.cloud.commands import record_presence, register_vehicle
from muto.cloud.errors import NotFound
from muto.cloud.eventlog import EventLog
from muto.cloud.writer import Command, UnitOfWork, Writer, Written
from muto.domain.model.vehicle import Vehicle
from tests.support.spine import cause, registration, sqlite_settings
from tests.support.waits import eventually

WAIT = 30.0  # seconds before a stuck test fails instead of hanging
T = TypeVar("T")


class Gate:
    """A command that holds the writer thread until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, uow: UnitOfWork) -> None:
        self.entered.set()
        assert self.opened.wait(WAIT), "gate never opened"

    def hold(self, writer: Writer) -> Future[Written[None]]:
        future = writer.submit(self)
        assert self.entered.wait(WAIT)
        return future


def one_batch(writer: Writer, commands: list[Command[T]]) -> list[Written[T]]:
    """Run `commands` queued behind a gate, so that the writer takes them as one batch."""
    gate = Gate()
    held = gate.hold(writer)
    futures = [writer.submit(command) for command in commands]
    gate.opened.set()
    held.result(WAIT)
    return [future.result(WAIT) for future in futures]


def vehicle(log: EventLog, vehicle_id: str) -> Vehicle:
    found = log.repository.get(Vehicle.create_id(vehicle_id))
    assert isinstance(found, Vehicle)
    return found


def test_concurrent_submits_are_saved_in_fewer_batches(log: EventLog, writer: Writer) -> None:
    gate = Gate()
    held = gate.hold(writer)
    ids = [f"v{i:03d}" for i in range(160)]

    def submit(vehicle_id: str) -> Future[Written[tuple[bool, int]]]:
        return writer.submit(register_vehicle(registration(vehicle_id), cause()))

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = list(pool.map(submit, ids))
    gate.opened.set()

    results = [f.result(WAIT) for f in futures]
    held.result(WAIT)
    assert [r.value for r in results] == [(True, 1)] * len(ids)
    assert writer.commands == len(ids) + 1
    assert writer.batches < writer.commands
    assert writer.batches == 2  # the gate alone, then everything queued behind it
    assert len({r.position for r in results}) == 1  # one transaction for the batch
    assert log.position() == len(ids)
    assert {vehicle(log, v).vehicle_id for v in ids} == set(ids)


def test_a_failing_command_fails_alone(log: EventLog, writer: Writer) -> None:
    writer.execute(register_vehicle(registration("v1"), cause()))
    writer.execute(register_vehicle(registration("v2"), cause()))

    def half_done_then_broken(uow: UnitOfWork) -> None:
        found = uow.find(Vehicle, Vehicle.create_id("v1"))
        assert found is not None
        found.record_presence("offline", None, "test", "c")  # must not be saved
        raise RuntimeError("broken command")

    before = writer.batches
    gate = Gate()
    held = gate.hold(writer)
    first = writer.submit(record_presence("v1", "online", None, "test"))
    broken = writer.submit(half_done_then_broken)
    unknown = writer.submit(record_presence("ghost", "online", None, "test"))
    last = writer.submit(record_presence("v2", "online", None, "test"))
    gate.opened.set()
    held.result(WAIT)

    assert first.result(WAIT).value is True
    assert last.result(WAIT).value is True
    with pytest.raises(RuntimeError, match="broken command"):
        broken.result(WAIT)
    with pytest.raises(NotFound):
        unknown.result(WAIT)
    assert writer.batches == before + 2  # the gate, then the four together
    assert vehicle(log, "v1").presence == "online"
    assert vehicle(log, "v1").version == 2
    assert vehicle(log, "v2").presence == "online"


def test_close_drains_the_queue(log: EventLog) -> None:
    writer = Writer(log)
    writer.start()
    gate = Gate()
    held = gate.hold(writer)
    futures = [writer.submit(register_vehicle(registration(f"v{i}"), cause())) for i in range(50)]
    closer = threading.Thread(target=writer.close)
    closer.start()
    gate.opened.set()
    closer.join(WAIT)

    assert not closer.is_alive()
    assert held.done()
    assert all(f.done() for f in futures)
    assert [f.result().value for f in futures] == [(True, 1)] * 50
    assert log.position() == 50


def test_nothing_runs_before_start_and_close_still_finishes_the_queue(log: EventLog) -> None:
    writer = Writer(log)
    future = writer.submit(register_vehicle(registration("v1"), cause()))
    assert not future.done() and log.position() == 0
    writer.close()
    assert future.result(WAIT).value == (True, 1)
    assert log.position() == 1


def test_an_idle_writers_caller_runs_its_command_on_its_own_thread(log: EventLog) -> None:
    saved: list[int | None] = []
    writer = Writer(log, on_saved=saved.append)
    batches: list[int] = []
    writer.batch_observers.append(lambda commands, _seconds: batches.append(commands))
    writer.start()
    try:
        ran_on: list[str] = []
        register = register_vehicle(registration("v1"), cause())

        def command(uow: UnitOfWork) -> tuple[bool, int]:
            ran_on.append(threading.current_thread().name)
            return register(uow)

        written = writer.execute(command)
        assert ran_on == [threading.current_thread().name]  # no hand-off
        assert written.value == (True, 1) and written.position == 1
        assert batches == [1] and saved == [1]  # observed and announced as any batch
        assert (writer.batches, writer.commands) == (1, 1)
        with pytest.raises(NotFound):  # a refusal reaches its caller the same way
            writer.execute(record_presence("ghost", "online", None, "test"))
        assert writer.execute(record_presence("v1", "online", None, "test")).value is True
        assert vehicle(log, "v1").presence == "online"
    finally:
        writer.close()


def test_a_caller_waits_behind_what_is_outstanding_and_callers_still_share_a_batch(
    log: EventLog, writer: Writer
) -> None:
    """While anything is queued or running, `execute` queues: its command runs after
    everything submitted before it, on the writer thread, batched with its neighbours."""
    gate = Gate()
    held = gate.hold(writer)
    ran: list[tuple[str, str]] = []

    def command(vehicle_id: str) -> None:
        register = register_vehicle(registration(vehicle_id), cause())

        def run(uow: UnitOfWork) -> tuple[bool, int]:
            ran.append((vehicle_id, threading.current_thread().name))
            return register(uow)

        writer.execute(run)

    callers = [threading.Thread(target=command, args=(f"v{i}",)) for i in range(8)]
    for caller in callers:
        caller.start()
    eventually(lambda: writer._queue.qsize() == 8, "every caller queued behind the gate")
    assert ran == []  # nothing overtook the command still running
    gate.opened.set()
    for caller in callers:
        caller.join(WAIT)
    held.result(WAIT)
    assert {thread for _, thread in ran} == {"muto-writer"}
    assert writer.batches == 2  # the gate, then the eight together
    assert log.position() == 8


def test_after_a_batch_of_several_a_caller_queues_until_a_batch_is_alone(
    log: EventLog, writer: Writer
) -> None:
    """Concurrent callers come back together: one of them running its command alone on
    its own thread would split their next batch in two. So after a batch of several the
    next command goes to the writer thread; after a batch of one, callers run their own."""
    gate = Gate()
    held = gate.hold(writer)
    queued = [writer.submit(register_vehicle(registration(f"v{i}"), cause())) for i in range(3)]
    gate.opened.set()
    held.result(WAIT)
    for future in queued:
        future.result(WAIT)
    assert writer.batches == 2  # the gate, then the three together

    ran_on: list[str] = []

    def where(uow: UnitOfWork) -> None:
        ran_on.append(threading.current_thread().name)

    writer.execute(where)
    writer.execute(where)
    assert ran_on == ["muto-writer", threading.current_thread().name]


def test_a_batch_that_another_process_made_stale_is_saved_together_on_fresh_loads(
    tmp_path: Path,
) -> None:
    """Two writers on one store (two API processes): the second moves vehicles the first
    has cached. The first's next batch conflicts at its save, and is run again together
    on fresh loads, in one transaction, not command by command (a load and a commit
    each)."""
    here, there = EventLog.open(sqlite_settings(tmp_path)), EventLog.open(sqlite_settings(tmp_path))
    one, other = Writer(here), Writer(there)
    one.start()
    other.start()
    try:
        ids = [f"v{i}" for i in range(8)]
        for vehicle_id in ids:
            one.execute(register_vehicle(registration(vehicle_id), cause()))
            vehicle(here, vehicle_id)  # cached here, at version 1
        for vehicle_id in ids[:4]:  # moved there: stale here
            other.execute(record_presence(vehicle_id, "online", None, "test"))
        results = one_batch(one, [record_presence(v, "offline", None, "test") for v in ids])
        assert [r.value for r in results] == [True] * 8
        assert len({r.position for r in results}) == 1  # together, in one transaction
        assert {vehicle(here, v).presence for v in ids} == {"offline"}
        assert [vehicle(here, v).version for v in ids] == [3] * 4 + [2] * 4
    finally:
        one.close()
        other.close()
        here.close()
        there.close()


def test_after_a_conflict_a_batch_brings_its_stale_vehicles_up_to_date_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a batch has conflicted with another process, the next batches first bring
    the vehicles they name up to date (one query): vehicles the other process moved
    again are saved at the first attempt, in one transaction."""
    here, there = EventLog.open(sqlite_settings(tmp_path)), EventLog.open(sqlite_settings(tmp_path))
    one, other = Writer(here), Writer(there)
    one.start()
    other.start()
    saves: list[int] = []
    insert = here.recorder.insert_events

    def counted(*args: Any, **kwargs: Any) -> Any:
        saves.append(len(args[0]))
        return insert(*args, **kwargs)

    monkeypatch.setattr(here.recorder, "insert_events", counted)
    try:
        ids = [f"v{i}" for i in range(8)]
        for vehicle_id in ids:
            one.execute(register_vehicle(registration(vehicle_id), cause()))
        other.execute(record_presence(ids[0], "online", None, "test"))
        saves.clear()
        one.execute(record_presence(ids[0], "offline", None, "test"))  # conflicts once
        assert saves == [1, 1]
        for vehicle_id in ids[:4]:  # moved there again: stale here
            other.execute(record_presence(vehicle_id, "online", None, "test"))
        saves.clear()
        results = one_batch(one, [record_presence(v, "offline", None, "test") for v in ids])
        assert [r.value for r in results] == [True] * 8
        assert saves == [0, 8]  # the gate's, then the batch's at its first attempt
        assert {vehicle(here, v).presence for v in ids} == {"offline"}
    finally:
        one.close()
        other.close()
        here.close()
        there.close()
