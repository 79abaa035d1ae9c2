"""`muto audit explain --rollout` tells a paused rollout's deadline as the API does: a
paused phase's clock stands still, so it has no deadline, only what it has left (the
API's `deadline: null` and `deadlineRemainingS`); on resume the deadline moves out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from muto.audit.render import standing_rows
from muto.audit.source import Entry
from muto.audit.story import standing

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def entry(position: int, seconds: float, type_: str, **data: Any) -> Entry:
    at = T0 + timedelta(seconds=seconds)
    return Entry(
        position=position,
        at=at,
        type=type_,
        aggregate="ro-1",
        version=position,
        actor="operator",
        correlation_id="ro-1",
        data={"rollout_id": "ro-1", "at": at.isoformat(), **data},
    )


STARTED = [
    entry(1, 0, "Rollout.Started", thresholds={"canaryDeadlineSec": 60}, canaries=["v1"], wave=[]),
    entry(2, 0, "Rollout.PhaseAssigned", phase="canary", vehicle_ids=["v1"], revision="dsr_1"),
]


def test_a_paused_phase_has_no_deadline_only_what_it_has_left() -> None:
    paused = standing([*STARTED, entry(3, 45, "Rollout.Paused")], "ro-1")
    assert paused is not None
    assert (paused.paused, paused.deadline, paused.left_s) == (True, None, 15.0)
    rows = dict(standing_rows(paused))
    assert rows["deadline"] == "none while paused (15 s left of the phase)"


def test_on_resume_the_deadline_moves_out_by_the_time_paused() -> None:
    resumed = standing(
        [*STARTED, entry(3, 45, "Rollout.Paused"), entry(4, 100, "Rollout.Resumed")], "ro-1"
    )
    assert resumed is not None
    assert (resumed.deadline, resumed.left_s) == (T0 + timedelta(seconds=115), None)
