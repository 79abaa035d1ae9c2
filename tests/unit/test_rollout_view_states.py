"""GET /rollouts/{id} from plain view rows (muto/cloud/queries/rollouts.py:
`rollout_view`): a paused phase shows no deadline but what is left of it; a final
rollout's never-assigned members show `not_assigned`, never `pending`; a superseded
member says by what. And the gate never judges superseded or not-assigned members."""

from __future__ import annotations

from typing import Any

from muto.cloud.queries.rollouts import rollout_view
from muto.domain.rollout_rules import Member, MemberStatus, Verdict, evaluate_phase


def row(**values: Any) -> dict[str, Any]:
    base = {
        "rollout_id": "ro-1",
        "state": "canary",
        "paused": False,
        "selector": "model=m3",
        "release_key": "core@2.0.0",
        "thresholds": {"convergedPct": 95.0, "canaryDeadlineSec": 600.0},
        "decisions": [],
        "deadline_at": "2026-01-01T00:10:00+00:00",
        "paused_at": None,
        "started_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    return {**base, **values}


def member(vehicle_id: str, phase: str, status: str, **values: Any) -> dict[str, Any]:
    return {
        "vehicle_id": vehicle_id,
        "phase": phase,
        "revision": None if status == "pending" else "dsr_1",
        "status": status,
        "reason_codes": [],
        **values,
    }


def test_a_paused_phase_shows_no_deadline_but_the_time_it_has_left() -> None:
    paused = rollout_view(row(paused=True, paused_at="2026-01-01T00:04:00+00:00"), [], [], 0)
    assert paused.deadline is None
    assert paused.deadline_remaining_s == 360.0
    running = rollout_view(row(), [], [], 0)
    assert running.deadline == "2026-01-01T00:10:00+00:00"
    assert running.deadline_remaining_s is None
    overdue = row(paused=True, paused_at="2026-01-01T00:11:00+00:00")  # paused after it
    assert rollout_view(overdue, [], [], 0).deadline_remaining_s == 0.0


def test_an_aborted_rollouts_wave_is_not_assigned_not_pending() -> None:
    members = [
        member("v0", "canary", "rolled_back"),
        member("v1", "wave", "pending"),
        member("v2", "wave", "pending"),
    ]
    aborted = rollout_view(row(state="aborted", deadline_at=None), members, [], 0)
    assert aborted.phases["wave"].pending == 0
    assert aborted.phases["wave"].not_assigned == 2
    assert {str(m.status) for m in aborted.vehicles if m.phase == "wave"} == {"not_assigned"}
    active = rollout_view(row(), members, [], 0)
    assert active.phases["wave"].pending == 2 and active.phases["wave"].not_assigned == 0


def test_a_superseded_member_says_by_what() -> None:
    members = [member("v0", "canary", "superseded", superseded_by="dsr_9")]
    shown = rollout_view(row(), members, [], 0)
    assert shown.vehicles[0].superseded_by == "dsr_9"
    assert shown.phases["canary"].superseded == 1


def test_the_gate_judges_neither_superseded_nor_not_assigned_members() -> None:
    members = [
        Member("a", MemberStatus.CONVERGED),
        Member("b", MemberStatus.SUPERSEDED),
        Member("c", MemberStatus.NOT_ASSIGNED),
    ]
    evaluation = evaluate_phase(members, 95.0, deadline_passed=True)
    assert (evaluation.verdict, evaluation.targeted, evaluation.converged_pct) == (
        Verdict.PASS,
        1,
        100.0,
    )
