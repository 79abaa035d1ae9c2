"""Start-up recovery: an agent that died mid-step finds the step still in flight; one
that keeps dying before finishing a pass, with nothing in flight, is in a restart loop."""

from __future__ import annotations

from datetime import datetime

from muto.agent.journal.events import Interrupted, RestartLoopDetected
from muto.agent.journal.state import JournalState
from muto.agent.reconcile.planner import last_outcome
from muto.domain.reports import ReconcileStatus

RETRY_LIMIT = 3


def interrupted(state: JournalState, now: datetime, limit: int = RETRY_LIMIT) -> Interrupted | None:
    """The event that settles a step the previous run left in flight, or None.

    Only a run that died leaves one: a planned stop (`AgentStopped`) ends its step
    uncounted (fold), so stops never add up to a give-up.

    The count is per revision and step. Below `limit` the planner resumes (applies
    again, or rolls back again); at `limit` it gives up on the revision
    (RETRY_LIMIT_REACHED) and rolls back to the previous known good."""
    flight = state.in_flight
    if flight is None:
        return None
    count = state.interruptions.get(f"{flight.sequence}:{flight.step}", 0) + 1
    return Interrupted(
        at=now,
        step=flight.step,
        release_key=flight.release_key,
        revision=flight.revision,
        sequence=flight.sequence,
        count=count,
        gave_up=count >= limit,
    )


def restart_loop(
    state: JournalState, now: datetime, limit: int = RETRY_LIMIT
) -> RestartLoopDetected | None:
    """The event that gives up the pending revision after `limit` runs in a row died
    before finishing a pass, or None.

    Deaths with a step in flight are counted per step by `interrupted` (and a due
    rollback must run, not be given up); this catches the rest: an agent killed while
    fetching, verifying, caching, reporting, or right after readiness passed, on every
    start. Giving up rolls back to the previous known good, as an interrupted apply does.
    A run that finishes one pass resets the count (`PassCompleted`), so restarts of a
    healthy agent (a depot's nightly power-off) never add up."""
    desired = state.desired
    if state.unfinished_runs < limit or desired is None or desired.release is None:
        return None  # (stopping for a "run nothing" revision is retried, never given up)
    if state.in_flight is not None or state.rollback_due is not None:
        return None
    last = last_outcome(state, desired.revision)
    if last is not None and last.status is not ReconcileStatus.BLOCKED:
        return None  # finished with (only a blocked revision is still to be applied)
    return RestartLoopDetected(
        at=now,
        release_key=desired.release.key,
        revision=desired.revision,
        sequence=desired.sequence,
        runs=state.unfinished_runs,
    )
