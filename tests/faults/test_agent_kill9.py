"""Scenario 1: kill -9 the agent at every named step of the reconcile loop (the
MUTO_AGENT_KILL_AT hook) and at random moments, on real processes (the agent, the
cloud, Mosquitto, an artifact server, the stack's own processes).

Each round: a new desired state; the agent is killed -9 at a named step; restarted, it
must settle on that revision; then a newer desired state and a kill -9 from outside
after a random delay (0-2 s). After every kill: the journal opens and verifies, and
every record committed before it is still there, unchanged. After every settle: the
release the journal says runs is the desired one (converged) or the previous known
good (rolled back), and it is the one and only stack process the agent runs (never
half-applied). At the end: every reconcile report the journal queued is in the cloud
exactly once, in the journal's order.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter

import pytest

from muto.agent.journal import Journal
from muto.agent.journal.events import ReportQueued
from muto.agent.journal.state import JournalState
from muto.agent.kill import POINTS
from tests.faults.fleet import (
    Fleet,
    Vehicle,
    journal_problems,
    journal_state,
    reconcile_reports,
    running_apps,
    settled_on,
    stored_records,
)
from tests.faults.runs import runs
from tests.support.waits import NOT_YET, eventually

pytestmark = pytest.mark.mqtt
EVERY_POINT = sorted(POINTS) + sorted(f"{p}:done" for p in POINTS - {"fetch"})
FEW_POINTS = ["apply", "readiness:done", "rollback", "deliver"]
RANDOM_KILL_WITHIN_S = 2.0

# Opening a live agent's journal can meet its write lock ("database is locked").
JOURNAL_BUSY = (*NOT_YET, sqlite3.OperationalError)


class Survivor:
    """What the journal held after the last kill: the next one must still hold it."""

    def __init__(self, car: Vehicle) -> None:
        self.car = car
        self.records: list[tuple[int, bytes]] = []

    def check(self) -> None:
        assert journal_problems(self.car) == []
        now = stored_records(self.car)
        assert now[: len(self.records)] == self.records, "a committed record was lost"
        self.records = now


def journal_target(state: JournalState) -> str | None:
    """What the next start runs before fetching: the journal's desired release unless
    it failed here, else the running one."""
    desired = state.desired
    if desired is not None and desired.release.key not in state.failed:
        return desired.release.key
    return state.running_key


def settle(car: Vehicle, revision: str, mode: str, good_before: str | None) -> str:
    """Wait until the agent is done with `revision`; check where it ended."""
    state = eventually(
        lambda: settled_on(car, revision),
        f"settling on {revision}",
        tolerate=JOURNAL_BUSY,  # read while the live agent writes it: look again
    )
    outcome = state.reported[revision]
    if mode == "serve":
        assert (str(outcome.status), state.running_key) == (
            "converged",
            state.desired.release.key,
        ), outcome
    else:
        assert str(outcome.status) == "rolled_back", outcome
        assert state.running_key == good_before
    running = state.running_key
    assert running is not None
    apps = eventually(lambda: running_apps(car.pid), "the stack's process")
    assert len(apps) == 1 and apps[0].startswith(f"{running}-"), (apps, running)
    return running


@pytest.mark.parametrize("count", runs(len(FEW_POINTS), 100, full_timeout_s=3600))
def test_kill9_at_every_step_and_at_random_moments(fleet: Fleet, count: int) -> None:
    points = EVERY_POINT if count > len(FEW_POINTS) else FEW_POINTS
    rng = random.Random(9)
    car = fleet.agent("car-k9")
    survivor = Survivor(car)
    kills: Counter[str] = Counter()
    revision = fleet.desire(car.vehicle_id, fleet.release())
    car.run()
    try:
        good = settle(car, revision, "serve", None)
        for n in range(count):
            # A newer desired state, and a kill -9 from outside at a random moment.
            fleet.desire(car.vehicle_id, fleet.release())
            time.sleep(rng.uniform(0, RANDOM_KILL_WITHIN_S))
            assert car.kill() == -9
            kills["random"] += 1
            survivor.check()
            # A start converges on the journal's desired state before it fetches: that
            # is the known good the crash-looping release below will fall back to.
            good_before = journal_target(journal_state(car)) or good
            # The next desired state, and a kill -9 at a named step.
            point = points[n % len(points)]
            mode = "crash" if point.startswith("rollback") or n % 5 == 4 else "serve"
            revision = fleet.desire(car.vehicle_id, fleet.release(mode))
            car.run(kill_at=point)
            assert car.wait_exit() == -9, f"the agent did not die at {point}"
            kills[point] += 1
            survivor.check()
            car.run()
            good = settle(car, revision, mode, good_before)
    finally:
        code = car.stop()
    assert code == 0
    survivor.check()
    with Journal.read_only(car.data) as journal:
        queued = [
            r.event.report_id
            for r in journal.records()
            if isinstance(r.event, ReportQueued) and r.event.kind == "reconcile"
        ]
    stored = [report["reportId"] for report in reconcile_reports(fleet.cloud, car.vehicle_id)]
    assert stored == queued  # each once, in order
    print(f"\nscenario 1: {sum(kills.values())} kills -9 {dict(sorted(kills.items()))}; "
          f"{len(queued)} reports, each stored once in order")  # fmt: skip
