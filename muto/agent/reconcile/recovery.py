"""Start-up recovery: an agent that died mid-step finds the step still in flight."""

from __future__ import annotations

from datetime import datetime

from muto.agent.journal.events import Interrupted
from muto.agent.journal.state import JournalState

RETRY_LIMIT = 3


def interrupted(state: JournalState, now: datetime, limit: int = RETRY_LIMIT) -> Interrupted | None:
    """The event that settles a step the previous run left in flight, or None.

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
