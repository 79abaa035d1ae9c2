"""Scenario 2: an agent killed -9 at the same step on every start (MUTO_AGENT_KILL_AT on
every restart, real processes) stops retrying after a bound and reports why.

The new release was downloaded earlier (while the vehicle was moving); then each start
dies at the named step:
- `apply`, `readiness`, `apply:done` (the new release in flight): after RETRY_LIMIT
  starts the agent gives it up and rolls back to the previous known good, which runs
  (`rolled_back`, RETRY_LIMIT_REACHED + ROLLBACK_APPLIED);
- `rollback` (restoring the previous known good is what dies): after the bound it gives
  that up too and stops the runtime (`failed`, NO_PREVIOUS_KNOWN_GOOD): nothing is left
  half-applied;
- `readiness:done` (nothing in flight): the runs die before finishing a pass; after
  RETRY_LIMIT of them the start gives the revision up (RestartLoopDetected) and rolls
  back, as for `apply`;
- `cache` dies for every release: the revision is given up as above, then the rollback
  that must cache the known good is given up too (`failed`, NO_PREVIOUS_KNOWN_GOOD);
- `fetch`: every run first reconciles from its journal, so the new release converges and
  keeps running although every run dies at its first fetch; nothing is retried.
"""

from __future__ import annotations

import time

import pytest

from muto.agent.reconcile.recovery import RETRY_LIMIT
from tests.faults.fleet import Fleet, Vehicle, journal_state, running_apps, settled_on
from tests.faults.runs import cases
from tests.support.waits import eventually

pytestmark = pytest.mark.mqtt
ROLLED_BACK = ("serve", "rolled_back", ["RETRY_LIMIT_REACHED", "ROLLBACK_APPLIED"], RETRY_LIMIT)
NO_GOOD_LEFT = ("crash", "failed",
                ["CRASH_LOOP_DETECTED", "RETRY_LIMIT_REACHED", "NO_PREVIOUS_KNOWN_GOOD"],
                RETRY_LIMIT + 1)  # fmt: skip
EXPECTED = {
    "apply": ROLLED_BACK,
    "readiness": ROLLED_BACK,
    "apply:done": ROLLED_BACK,
    "rollback": NO_GOOD_LEFT,
    "readiness:done": ROLLED_BACK,
    # Caching dies for every release: the give-up's rollback to the known good too.
    "cache": ("serve", "failed", ["RETRY_LIMIT_REACHED", "NO_PREVIOUS_KNOWN_GOOD"],
              2 * RETRY_LIMIT),
}  # fmt: skip
MAX_STARTS = 2 * RETRY_LIMIT + 2


def starts_until_it_survives(car: Vehicle, point: str, revision: str) -> int:
    """Start with the kill switch until a start settles `revision`; returns the kills."""
    for kills in range(MAX_STARTS):
        car.run(kill_at=point)
        assert car.proc is not None
        deadline = time.monotonic() + 60
        while car.proc.poll() is None and not settled_on(car, revision):
            assert time.monotonic() < deadline, "neither died nor settled"
            time.sleep(0.1)
        if car.proc.poll() is None:
            return kills
        assert car.wait_exit() == -9
    raise AssertionError(f"still dying at {point} after {MAX_STARTS} starts")


def downloaded_while_moving(fleet: Fleet, car: Vehicle, mode: str) -> str:
    """Assign a new release while the vehicle moves: the agent downloads it, blocked."""
    car.drive()
    release = fleet.release(mode)
    revision = fleet.desire(car.vehicle_id, release)

    def blocked_with_it_cached() -> bool:
        state = journal_state(car)
        outcome = state.reported.get(revision)
        cached = (car.data / "cache").rglob(release.artifacts[0].digest.split(":")[1])
        return outcome is not None and str(outcome.status) == "blocked" and any(cached)

    eventually(blocked_with_it_cached, "the new release downloaded, blocked")
    return revision


@pytest.mark.parametrize(
    "point",
    cases(["apply", "rollback", "readiness:done"], ["readiness", "apply:done", "cache"]),
)
def test_killed_at_the_same_step_on_every_start(fleet: Fleet, point: str) -> None:
    mode, status, codes, bound = EXPECTED[point]
    car = fleet.agent("car-rb")
    good = fleet.release()
    first = fleet.desire(car.vehicle_id, good)
    car.run()
    eventually(lambda: settled_on(car, first), "the first release")
    revision = downloaded_while_moving(fleet, car, mode)
    assert car.kill() == -9
    car.park()
    try:
        kills = starts_until_it_survives(car, point, revision)
        state = settled_on(car, revision)
        assert state is not None
        outcome = state.reported[revision]
        assert (str(outcome.status), [str(c) for c in outcome.codes]) == (status, codes)
        assert kills <= bound
        seen = fleet.cloud.vehicle(car.vehicle_id)
        assert (seen["lastStatus"], seen["lastReasonCodes"]) == (status, codes)
        if status == "rolled_back":
            assert state.running_key == good.key
            apps = eventually(lambda: running_apps(car.pid), "the previous known good")
            assert len(apps) == 1 and apps[0].startswith(f"{good.key}-")
        else:
            assert state.running_key is None and running_apps(car.pid) == []
    finally:
        car.stop()
    print(f"\nscenario 2 at {point}: {kills} kills -9, then {status} {codes}")


def test_killed_at_every_fetch_the_vehicle_runs_its_journal(fleet: Fleet) -> None:
    """Every run reconciles from its journal before it fetches: the new release, already
    cached, is applied and stays converged although each run dies at its first fetch."""
    car = fleet.agent("car-fetch")
    good = fleet.release()
    first = fleet.desire(car.vehicle_id, good)
    car.run()
    eventually(lambda: settled_on(car, first), "the first release")
    revision = downloaded_while_moving(fleet, car, "serve")
    assert car.kill() == -9
    car.park()
    new = journal_state(car).desired
    assert new is not None
    for _ in range(MAX_STARTS):
        car.run(kill_at="fetch")
        assert car.wait_exit() == -9
        state = journal_state(car)
        assert state.running_key == new.release.key and state.in_flight is None
        assert str(state.reported[revision].status) == "converged"
    assert state.rollback_due is None and state.unfinished_runs == 0
    print(f"\nscenario 2 at fetch: {MAX_STARTS} kills -9, converged from the journal each run")
