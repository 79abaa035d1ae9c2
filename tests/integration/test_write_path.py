"""WritePath.run with the projector's thread running (as in a serving process): the
caller is resumed once its views show the write (read-your-writes), a failed command
raises its own error, views slower than the timeout make `views_current` False (the
write is stored), and the timeout counts from the commit, not from the submission."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import record_reconcile
from muto.cloud.errors import NotFound
from tests.support.spine import reconcile_report, register_fleet, registration, sqlite_settings

VEHICLES = [f"v{i}" for i in range(8)]


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    register_fleet(cp, [registration(v) for v in VEHICLES])
    cp.projector.start(follow=None)  # projects on demand, as an API process
    try:
        yield cp
    finally:
        cp.close()


def test_each_write_is_in_the_views_when_its_caller_resumes(plane: ControlPlane) -> None:
    async def report(i: int) -> None:
        vehicle = VEHICLES[i % len(VEHICLES)]
        written = await plane.writes.run(record_reconcile(reconcile_report(vehicle, f"r{i}"), "t"))
        assert written.value is True and written.views_current is True
        assert plane.projector.position() >= (written.position or 0)

    async def many() -> None:
        await asyncio.gather(*(report(i) for i in range(64)))

    asyncio.run(many())
    assert plane.projector.following()


def test_a_refused_command_raises_its_own_error(plane: ControlPlane) -> None:
    command = record_reconcile(reconcile_report("ghost", "r1"), "t")
    with pytest.raises(NotFound, match="ghost"):
        asyncio.run(plane.writes.run(command))


def test_slow_views_leave_the_write_stored_and_say_so(plane: ControlPlane) -> None:
    plane.writes.views_timeout = 0.3
    with plane.projector._lock:  # the projector cannot take a step meanwhile
        written = asyncio.run(plane.writes.run(record_reconcile(reconcile_report("v1", "r1"), "t")))
    assert written.value is True and written.views_current is False
    assert written.position == plane.log.position()


def test_the_views_timeout_counts_from_the_commit(plane: ControlPlane) -> None:
    # The writer is held twice as long as the views' timeout: counted from the
    # submission, it would run out before the commit; counted from the commit, the
    # projector has the whole second to show the write, even on a loaded machine.
    plane.writes.views_timeout = 1.0
    held = threading.Event()

    def hold() -> None:  # the writer cannot commit meanwhile
        with plane.log.writer_repository.batch_lock:
            held.set()
            time.sleep(2.0)

    threading.Thread(target=hold).start()
    held.wait()
    started = time.monotonic()
    written = asyncio.run(plane.writes.run(record_reconcile(reconcile_report("v1", "r1"), "t")))
    assert time.monotonic() - started >= 1.9
    assert written.views_current is True


class LateWake(threading.Event):
    """A wake that always lands in the narrowest window: just after the projector's wait
    timed out, before the loop goes on (held back until then)."""

    held = False

    def set(self) -> None:
        self.held = True

    def wait(self, timeout: float | None = None) -> bool:
        woken = super().wait(timeout)
        if not woken and self.held:
            self.held = False
            super().set()
        return woken


def test_a_wake_landing_as_the_wait_times_out_is_not_lost(tmp_path: Path) -> None:
    # An API process projects only when woken (follow=None): a lost wake left its
    # write's caller waiting out the views timeout (a 503 after a stored write).
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    try:
        register_fleet(cp, [registration("v1")])
        cp.projector._wake = LateWake()
        cp.projector.start(follow=None)
        cp.writes.views_timeout = 5.0
        written = asyncio.run(cp.writes.run(record_reconcile(reconcile_report("v1", "r1"), "t")))
        assert written.views_current is True
        assert cp.projector.position() == cp.log.position()
    finally:
        cp.close()


def test_a_write_leaves_no_garbage_for_the_collector(plane: ControlPlane) -> None:
    """Nothing on the write path makes a reference cycle per request: in the server such
    garbage, at thousands of writes a second, made the collector run and pause the
    process for ~200 ms (a timeout closure once referred to itself). Only muto's own
    objects are looked for: other tests' engines may become garbage meanwhile."""

    async def reports(start: int) -> None:
        for i in range(start, start + 50):
            vehicle = VEHICLES[i % len(VEHICLES)]
            await plane.writes.run(record_reconcile(reconcile_report(vehicle, f"g{i}"), "t"))

    async def garbage_of_writes() -> list[str]:
        await reports(0)  # warm: caches, prepared statements, lazy imports
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds, kept in gc.garbage
        try:
            await reports(1000)
            gc.collect()
            return [repr(o)[:120] for o in gc.garbage if _ours(o)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()

    assert asyncio.run(garbage_of_writes()) == []


def _ours(thing: object) -> bool:
    module = getattr(thing, "__module__", None) or type(thing).__module__
    return isinstance(module, str) and module.startswith("muto.")
