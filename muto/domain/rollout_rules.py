"""Pure rollout decisions: which vehicles are canaries, whether a phase passed, whether
a baking rollout is final, and when a phase's deadline falls.

A phase's members are judged from their latest reconcile outcome for the phase's
revision. The rules (docs/rollouts.md says them in prose):

- A *tripwire* (CRASH_LOOP_DETECTED, READINESS_TIMEOUT) fails the rollout whenever it
  arrives, from any member of any phase, until the rollout is final (bake included).
- Vehicles blocked by a safety gate are *deferred*: a vehicle's gate is its own
  authority. Before the deadline they count in the denominator (the rollout waits for
  their gate to open); at the deadline they leave it, so deferral alone never fails a
  gate and never causes the rollback of a vehicle that converged.
- Vehicles that *left* the rollout (relabelled out of the selector before their wave)
  are not judged at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from muto.domain.reasons import ReasonCode
from muto.domain.wire import Wire

# The longest a canary or wave deadline or a bake may be (RolloutThresholds, spec/api.yaml):
# ten years (365-day years), far beyond any rollout, and far inside what a date can
# hold (a deadline of ~2.5e11 s from now is past year 9999: it once stopped the views).
MAX_PHASE_SEC = 10 * 365 * 86400.0

# The seed's failure gates: any of these from any member fails the rollout at once.
TRIPWIRES = frozenset({ReasonCode.CRASH_LOOP_DETECTED, ReasonCode.READINESS_TIMEOUT})


# How a vehicle's presence ranks for canary choice, best first: `online` (connected and
# heard lately) before `stale` (connected, but silent for three heartbeats: it may be
# gone), before `offline` (known to be away), before never connected (None): a canary
# that cannot take the release only holds the rollout until the canary deadline.
PRESENCE_RANK = {"online": 0, "stale": 1, "offline": 2}


def presence_rank(presence: str | None) -> int:
    return PRESENCE_RANK.get(presence or "", len(PRESENCE_RANK))


@dataclass(frozen=True)
class Candidate:
    vehicle_id: str
    region: str
    model: str
    presence: str | None = "online"  # as the fleet shows it now (online, stale, offline)
    blocked: bool = False
    # Already running the rollout's release: as a canary it would pass the gate without
    # applying anything, so it proves nothing.
    runs_release: bool = False


def canary_preference(c: Candidate) -> tuple[int, bool, bool, str]:
    """The order canaries are chosen in, best first: by presence (PRESENCE_RANK), then
    one not already running the release, then one not blocked by its safety gate, then
    the lowest vehicle id (deterministic: a replay picks the same ones)."""
    return (presence_rank(c.presence), c.runs_release, c.blocked, c.vehicle_id)


def pick_canaries(candidates: Iterable[Candidate]) -> tuple[list[str], list[str]]:
    """Exactly one canary per (region, model) group, the first by `canary_preference`.
    Returns (canaries, wave), both sorted."""
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in candidates:
        groups.setdefault((c.region, c.model), []).append(c)
    canaries = sorted(min(group, key=canary_preference).vehicle_id for group in groups.values())
    chosen = set(canaries)
    wave = sorted(c.vehicle_id for g in groups.values() for c in g if c.vehicle_id not in chosen)
    return canaries, wave


@dataclass(frozen=True)
class Given:
    """A desired state a vehicle was given: its revision, its release (None: "run
    nothing"), and whether it was a rollout's rollback revision."""

    revision: str
    release: str | None
    rollback: bool = False


def rollback_target(
    release_key: str,
    given: Sequence[Given],
    running: str | None = None,
    reported_on: str | None = None,
    failed: bool = False,
) -> str | None:
    """The release a rollback of `release_key` returns a member to: the newest release
    it ran or was given before the rollout that is not `release_key` and is known good,
    else None ("run nothing"; a None among them is "run nothing" too).

    `given`: its desired states, newest first (its desired state now, the one before);
    `running`: what its last report said it runs (None: nothing, which says nothing of
    what it ran before), on revision `reported_on`; `failed`: that report said the
    release of `reported_on` failed on it (failed, rolled back), so that release is no
    target. What it runs comes first, then what it was given.

    A rollback revision is its own known good: what the vehicle ran or was given before
    it is what that rollback took away. So the states given before the newest rollback
    revision are not candidates, nor is `running` reported before it or on it (a
    vehicle that has not taken the rollback still runs what it took away), unless it is
    the release that rollback restores. Reported on a revision since, it counts only if
    it was given since: a vehicle that never took the rollback (a newer revision came
    first) and failed on the newer one still runs what the rollback took away, and a
    rollback must not return it there.

    And a rollout of a release a member already ran (a second rollout of it, for the
    vehicles the first did not cover) must never "roll it back" to that same release."""
    newest = next((i for i, g in enumerate(given) if g.rollback), None)
    if newest is None:
        known, runs_known_good = list(given), running is not None
    else:
        known = list(given[: newest + 1])
        since = given[:newest]
        runs_known_good = running is not None and (
            running == given[newest].release
            or (
                reported_on in {g.revision for g in since} and running in {g.release for g in since}
            )
        )
    history = [g.release for g in known]
    if runs_known_good:
        history.insert(0, running)
    broken = next((g.release for g in given if g.revision == reported_on), None) if failed else None
    for release in history:
        if release != release_key and (release is None or release != broken):
            return release
    return None


class MemberStatus(StrEnum):
    PENDING = "pending"  # not yet assigned
    ASSIGNED = "assigned"  # assigned, no outcome reported yet
    CONVERGED = "converged"
    DEFERRED = "deferred"  # blocked by a vehicle safety gate
    FAILED = "failed"
    # Given a rollback revision it has not confirmed yet: no report on it, or its newest
    # one there refuses or holds it (its codes say why): it may still run the release.
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"  # reported converged on its rollback revision
    LEFT = "left"  # no longer matched the selector when its wave was assigned
    # Given a newer desired state than the rollout's own (a direct assignment): its
    # intent is someone else's now, so it is neither judged nor rolled back.
    SUPERSEDED = "superseded"
    # Never assigned: the rollout ended before its phase (an aborted canary's wave).
    NOT_ASSIGNED = "not_assigned"


# Members a gate does not judge.
NOT_JUDGED = frozenset({MemberStatus.LEFT, MemberStatus.SUPERSEDED, MemberStatus.NOT_ASSIGNED})
# Members no newer intent supersedes: out of the rollout already, or given its rollback
# (the rollout's own last word on them).
NOT_SUPERSEDED = frozenset(
    {
        MemberStatus.LEFT,
        MemberStatus.SUPERSEDED,
        MemberStatus.ROLLING_BACK,
        MemberStatus.ROLLED_BACK,
    }
)
# Members given a rollback revision (the `rolledBack` of the rollout's record): whether
# they confirmed it or not.
GIVEN_ROLLBACK = frozenset({MemberStatus.ROLLING_BACK, MemberStatus.ROLLED_BACK})


def supersedes(
    rollout_id: str,
    release_key: str,
    given: str | None,
    current: str | None,
    current_rollout: str | None,
    current_release: str | None,
    issued_since_start: bool,
) -> bool:
    """Whether a member's desired state now (revision `current` of `current_release`,
    issued by rollout `current_rollout`, None: a direct assignment) is a newer intent
    than the rollout's own (`rollout_id`, of `release_key`), so that the rollout no
    longer judges it, assigns it or rolls it back: one issued by anyone other than this
    rollout (a direct assignment, or another rollout: its wave or its rollback, e.g. an
    operator rollback of an older rollout) after this one started.

    `given`: the revision this rollout gave the member (None: not yet). Once it has one,
    any other's revision replaced it later, so is newer — except another rollout's
    revision of this rollout's own release (its rollback back to it): that restores
    this rollout's intent, and this rollout's rollback still takes it away. Before
    that, `issued_since_start` says whether `current` was issued after the rollout
    started, in the store's order (a renewal re-signs the same revision: not issued
    anew). The rollout's own revisions (its phases, its rollback) never supersede.

    The one rule of the controller (muto/cloud/rollouts.py, on the aggregates) and of
    the rollouts view (muto/projections/rollouts.py, in log order); members of a status
    in NOT_SUPERSEDED are not asked."""
    if current is None or current_rollout == rollout_id:
        return False
    if given is not None:
        restored = current_rollout is not None and current_release == release_key
        return current != given and not restored
    return issued_since_start


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


@dataclass(frozen=True)
class Member:
    vehicle_id: str
    status: MemberStatus
    reason_codes: tuple[str, ...] = ()


class Evaluation(Wire, frozen=True, kw_only=True):
    """A gate verdict with its inputs: stored in the decision event for auditors.

    `counted` is the denominator of `converged_pct`: every judged member before the
    deadline, the judged members that are not deferred at it. `converged_pct` is None
    when none is counted: a share of nobody is no number (0 of 0 is neither 0% nor 100%).
    `tripped_by` counts the tripwire codes seen on any member of the rollout (earlier
    phases included)."""

    verdict: Verdict
    targeted: int
    converged: int
    deferred: int
    failed: int
    counted: int = 0
    converged_pct: float | None
    threshold_pct: float
    deadline_passed: bool = False
    reason_codes: list[str] = []
    deferred_by: dict[str, int] = {}
    failed_by: dict[str, int] = {}
    tripped_by: dict[str, int] = {}


def stored_share(evaluation: Mapping[str, Any]) -> float | None:
    """The converged share of a decision as stored (its JSON form), None when its gate
    counted no member. Decisions stored before the share could be None said 100.0 with
    nothing converged: only a share of nobody is both, so it reads as None too."""
    share = evaluation.get("convergedPct")
    if share is None or (share == 100.0 and not evaluation.get("converged")):
        return None
    return float(share)


def tripwires(members: Iterable[Member]) -> Counter[str]:
    """Tripwire codes on failed members: the rollout's alarm, whatever the phase."""
    return Counter(
        code
        for m in members
        if m.status is MemberStatus.FAILED
        for code in m.reason_codes
        if code in TRIPWIRES
    )


def evaluate_phase(
    members: Sequence[Member],
    threshold_pct: float,
    deadline_passed: bool,
    *,
    earlier: Sequence[Member] = (),
    need_evidence: bool = False,
) -> Evaluation:
    """FAIL at once on a tripwire (from `members` or the `earlier` phases' members), or
    when failures make the threshold unreachable; PASS when converged >= threshold;
    at the deadline deferred members leave the denominator and the phase PASSes or
    FAILs (GATE_DEADLINE_EXCEEDED) on the rest; else WAIT.

    `need_evidence` (the canary phase): a phase in which nothing converged never passes,
    so a canary phase whose canaries are all deferred at its deadline fails."""
    judged = [m for m in members if m.status not in NOT_JUDGED]
    counts = Counter(m.status for m in judged)
    targeted = len(judged)
    failed_members = [m for m in judged if m.status is MemberStatus.FAILED]
    failed_by = Counter(code for m in failed_members for code in m.reason_codes)
    deferred_by = Counter(
        code for m in judged if m.status is MemberStatus.DEFERRED for code in m.reason_codes
    )
    tripped = tripwires([*judged, *earlier])
    converged, deferred = counts[MemberStatus.CONVERGED], counts[MemberStatus.DEFERRED]
    counted = targeted - deferred if deadline_passed else targeted
    share = 100.0 * converged / counted if counted else None
    # None counted (all deferred at the deadline): no one is below the threshold, so a
    # wave passes vacuously; a canary phase still needs evidence (`need_evidence`).
    reached = share is None or share >= threshold_pct
    best_possible = 100.0 * (targeted - len(failed_members)) / targeted if targeted else 100.0
    no_evidence = need_evidence and converged == 0
    if tripped:
        verdict, codes = Verdict.FAIL, sorted(tripped)
    elif reached and not no_evidence:
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
        deferred=deferred,
        failed=len(failed_members),
        counted=counted,
        converged_pct=None if share is None else round(share, 2),
        threshold_pct=threshold_pct,
        deadline_passed=deadline_passed,
        reason_codes=[str(c) for c in codes],
        deferred_by=dict(deferred_by),
        failed_by=dict(failed_by),
        tripped_by=dict(tripped),
    )


def watch_bake(evaluation: Evaluation, bake_over: bool) -> Verdict:
    """A wave that passed its gate stays watched until its bake time is over: whatever
    would fail the gate now (a late tripwire, failures that make the threshold
    unreachable) fails the rollout; otherwise it is final (PASS) once the bake is over.
    So the outcome does not depend on whether a bad report came before or after the
    gate passed."""
    if evaluation.verdict is Verdict.FAIL:
        return Verdict.FAIL
    return Verdict.PASS if bake_over else Verdict.WAIT


def phase_deadline(started: datetime, limit_sec: float, paused_sec: float) -> datetime:
    """A phase's deadline: its start plus its limit, pushed out by the time it spent
    paused (pausing stops the deadline clock). The limit is read as at most
    MAX_PHASE_SEC, as its stored event is (Rollout.Started.repair): a larger one in a
    snapshot taken before the bound must not make this raise."""
    return started + timedelta(seconds=min(limit_sec, MAX_PHASE_SEC) + paused_sec)


def left_when_paused(deadline: datetime, paused_at: datetime) -> float:
    """The seconds a phase paused at `paused_at` has left of its deadline: while paused its
    clock stands still, so it has no deadline, only this (it moves out on resume)."""
    return max(0.0, round((deadline - paused_at).total_seconds(), 3))
