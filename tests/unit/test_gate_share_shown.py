"""A gate that counted no member (its canary deferred by a safety gate until the
deadline) has no converged percentage: every view of the decision says "none counted",
never "100% of 1", and a share names its true denominator, the members counted."""

from __future__ import annotations

from typing import Any

import pytest

from muto.audit.lines import LINES
from muto.cloud.dashboard.pages import templates
from muto.domain.events import GateEvaluation
from muto.domain.rollout_rules import Member, MemberStatus, evaluate_phase
from muto.domain.wire import to_builtins
from muto.fleetctl.rollouts import _pct

DEFERRED = Member("car-1", MemberStatus.DEFERRED, ("DENY_MOVING",))


def stored(evaluation: Any) -> dict[str, Any]:
    """A decision's evaluation as the views and the audit hold it (camelCase JSON)."""
    found: dict[str, Any] = to_builtins(GateEvaluation.of(evaluation))
    return found


NONE_COUNTED = stored(evaluate_phase([DEFERRED], 95.0, True, need_evidence=True))
# The same decision as stored before the share could be None.
OLDER = {**NONE_COUNTED, "convergedPct": 100.0}
# Two of four converged, two deferred at the deadline: 100% of the 2 counted.
HALF = stored(
    evaluate_phase(
        [Member(f"c{i}", MemberStatus.CONVERGED) for i in range(2)] + [DEFERRED, DEFERRED],
        95.0,
        True,
    )
)


def audit_line(evaluation: dict[str, Any]) -> str:
    data = {"evaluation": evaluation, "reason_code": "CANARY_GATE_FAILED"}
    return LINES["Rollout.CanaryGateFailed"](data)


def dashboard(evaluation: dict[str, Any]) -> str:
    page = templates.env.from_string(
        '{% from "macros.html" import facts, share %}'
        '{{ share(e) }} | {{ facts({"evaluation": e}) }}'
    )
    return " ".join(page.render(e=evaluation).split())


def test_none_counted_is_stored_as_no_percentage() -> None:
    assert NONE_COUNTED["verdict"] == "fail"
    assert (NONE_COUNTED["converged"], NONE_COUNTED["counted"]) == (0, 0)
    assert NONE_COUNTED["convergedPct"] is None


@pytest.mark.parametrize("evaluation", [NONE_COUNTED, OLDER], ids=["now", "stored before"])
def test_every_view_says_none_counted(evaluation: dict[str, Any]) -> None:
    assert _pct(evaluation) == "none counted (needs 95%)"
    assert audit_line(evaluation) == (
        "canary gate failed CANARY_GATE_FAILED: 0/1 converged (none counted vs 95.0%), "
        "1 deferred, 0 failed [GATE_DEADLINE_EXCEEDED]"
    )
    shown = dashboard(evaluation)
    assert shown.startswith("none counted | fail: 0/1 converged (none counted vs 95.0%)")
    assert "100" not in shown and "None" not in shown


def test_a_share_names_the_members_it_counted() -> None:
    assert (HALF["targeted"], HALF["counted"], HALF["convergedPct"]) == (4, 2, 100.0)
    assert _pct(HALF) == "100% of 2 counted (needs 95%)"
    assert "4/4" not in audit_line(HALF)
    assert "2/4 converged (100.0% of 2 counted vs 95.0%)" in audit_line(HALF)
    assert dashboard(HALF).startswith("100.0% of 2 counted | pass: 2/4 converged")
