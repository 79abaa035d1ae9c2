"""plan(): µs per decision on states folded from the same journal events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from itertools import islice
from typing import Any

from bench.agent.common import HEALTH_PER_ROLLOUT, PLAN_CALLS, PLAN_REPEAT, median_s
from bench.agent.life import T0, life
from muto.agent.journal import JournalState
from muto.agent.journal.fold import evolve
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import plan
from muto.agent.reconcile.steps import Apply
from muto.agent.runtime.base import RuntimeStatus
from muto.domain.vehicle_state import VehicleState

PARKED = VehicleState(
    battery_pct=80,
    timezone="Europe/Berlin",
    model="m3",
    os="ubuntu-22.04",
    ros_distro="humble",
    free_disk_mb=50_000,
)


def folded(count: int) -> JournalState:
    state = JournalState()
    for event in islice(life(), count):
        state.position += 1
        evolve(state, event)
    return state


def observed_for(state: JournalState) -> Observed:
    desired = state.desired
    assert desired is not None
    return Observed(
        journal=state,
        runtime=RuntimeStatus(
            release=state.running_key, alive=True, restart_count=0, crash_looping=False
        ),
        vehicle=PARKED,
        cached=frozenset(a.digest for a in desired.release.artifacts),
    )


def trivial(desired: object, observed: object, now: object) -> None:
    return None


def per_call_us(function: Callable[..., object], args: tuple[Any, ...]) -> float:
    def batch() -> None:
        for _ in range(PLAN_CALLS):
            function(*args)

    return median_s(batch, PLAN_REPEAT) / PLAN_CALLS * 1e6


def measure_plan() -> tuple[float, float, float]:
    """µs per plan(): the converged vehicle every poll sees (empty plan), the decision to
    apply a newly verified release (gates evaluated, artifacts cached); a trivial call."""
    cycle = 11 + 2 * HEALTH_PER_ROLLOUT
    steady = folded(cycle)  # converged, reported, health reports delivered
    fresh = folded(cycle + 3)  # the next rollout's DesiredVerified just folded in
    now = T0 + timedelta(days=1)
    converged_args = (steady.desired, observed_for(steady), now)
    apply_args = (fresh.desired, observed_for(fresh), now)
    quiet = plan(*converged_args)
    decided = plan(*apply_args)
    assert not quiet.steps and quiet.verdict is not None and quiet.verdict.kind == "converged"
    assert isinstance(decided.steps[-1], Apply), decided
    return (
        per_call_us(plan, converged_args),
        per_call_us(plan, apply_args),
        per_call_us(trivial, converged_args),
    )
