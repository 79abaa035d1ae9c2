"""Pure rollout decisions: which vehicles are canaries, and whether a phase passed.

A phase's members are judged from their latest reconcile outcome for the phase's
revision. Vehicles blocked by a safety gate are *deferred*: they count against
convergence but never trip a failure gate (their safety is theirs to decide).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from muto.domain.reasons import ReasonCode
from muto.domain.wire import Wire

# The seed's failure gates: any of these in a phase fails it at once.
TRIPWIRES = frozenset({ReasonCode.CRASH_LOOP_DETECTED, ReasonCode.READINESS_TIMEOUT})


@dataclass(frozen=True)
class Candidate:
    vehicle_id: str
    region: str
    model: str
    online: bool = True
    blocked: bool = False


def pick_canaries(candidates: Iterable[Candidate]) -> tuple[list[str], list[str]]:
    """Exactly one canary per (region, model) group: prefer online, then not blocked,
    then the lowest vehicle id (deterministic). Returns (canaries, wave), both sorted."""
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in candidates:
        groups.setdefault((c.region, c.model), []).append(c)
    canaries = sorted(
        min(group, key=lambda c: (not c.online, c.blocked, c.vehicle_id)).vehicle_id
        for group in groups.values()
    )
    chosen = set(canaries)
    wave = sorted(c.vehicle_id for g in groups.values() for c in g if c.vehicle_id not in chosen)
    return canaries, wave


class MemberStatus(StrEnum):
    PENDING = "pending"  # not yet assigned
    ASSIGNED = "assigned"  # assigned, no outcome reported yet
    CONVERGED = "converged"
    DEFERRED = "deferred"  # blocked by a vehicle safety gate
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class Member:
    vehicle_id: str
    status: MemberStatus
    reason_codes: tuple[str, ...] = ()


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


class Evaluation(Wire, frozen=True, kw_only=True):
    """A gate verdict with its inputs: stored in the decision event for auditors."""

    verdict: Verdict
    targeted: int
    converged: int
    deferred: int
    failed: int
    converged_pct: float
    threshold_pct: float
    reason_codes: list[str] = []
    deferred_by: dict[str, int] = {}
    failed_by: dict[str, int] = {}


def evaluate_phase(
    members: Sequence[Member], threshold_pct: float, deadline_passed: bool
) -> Evaluation:
    """PASS when converged >= threshold with no tripwire; FAIL at once on a tripwire,
    or when failures make the threshold unreachable, or at the deadline; else WAIT."""
    counts = Counter(m.status for m in members)
    targeted = len(members)
    failed_members = [m for m in members if m.status is MemberStatus.FAILED]
    failed_by = Counter(code for m in failed_members for code in m.reason_codes)
    deferred_by = Counter(
        code for m in members if m.status is MemberStatus.DEFERRED for code in m.reason_codes
    )
    converged = counts[MemberStatus.CONVERGED]
    pct = 100.0 * converged / targeted if targeted else 100.0
    best_possible = 100.0 * (targeted - len(failed_members)) / targeted if targeted else 100.0
    tripped = sorted(code for code in failed_by if code in TRIPWIRES)
    if tripped:
        verdict, codes = Verdict.FAIL, tripped
    elif pct >= threshold_pct:
        verdict, codes = Verdict.PASS, []
    elif best_possible < threshold_pct:
        verdict, codes = Verdict.FAIL, sorted(failed_by)
    elif deadline_passed:
        verdict, codes = Verdict.FAIL, [str(ReasonCode.GATE_DEADLINE_EXCEEDED)]
    else:
        verdict, codes = Verdict.WAIT, []
    return Evaluation(
        verdict=verdict,
        targeted=targeted,
        converged=converged,
        deferred=counts[MemberStatus.DEFERRED],
        failed=len(failed_members),
        converged_pct=round(pct, 2),
        threshold_pct=threshold_pct,
        reason_codes=[str(c) for c in codes],
        deferred_by=dict(deferred_by),
        failed_by=dict(failed_by),
    )
