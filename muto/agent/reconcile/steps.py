"""What a plan asks for: steps (a tagged union) and, when the pass is over, a verdict.

An executor table (executor.py) maps each step kind to the adapter calls that carry it
out; every outcome is journaled, and the planner sees it on its next look.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from muto.agent.journal.state import Outcome
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus


class Step(msgspec.Struct, frozen=True, kw_only=True, tag=True, rename="camel"):
    pass


class QueueReport(Step, frozen=True):
    """Put a reconcile report for `outcome` in the outbox."""

    outcome: Outcome


class NoteGates(Step, frozen=True):
    """Journal a gate verdict that differs from the last one for this revision."""

    revision: str
    sequence: int
    codes: list[ReasonCode]


class FetchArtifacts(Step, frozen=True):
    """Download into the cache (allowed while gates block: nothing changes on the vehicle)."""

    release_key: str
    digests: list[str]


class Apply(Step, frozen=True):
    """Make `release_key` the running release. `restore`: re-start the release the journal
    says is running (drift), which gates do not hold back; its `revision` is the one that
    release runs under (planner.under), as a failure of it is judged there."""

    release_key: str
    revision: str | None
    sequence: int | None
    replacing: str | None
    restore: bool = False


class AwaitReadiness(Step, frozen=True):
    release_key: str


class NoteCrashLoop(Step, frozen=True):
    """The running release restarts too often: it failed under `revision` (planner.under:
    the one it runs under, unless the desired state wants it); a rollback follows."""

    release_key: str
    revision: str | None
    sequence: int | None


class NoteGraphDegraded(Step, frozen=True):
    """The running release's ROS graph has stayed degraded longer than its grace
    (planner.degraded_grace_s): it failed with ROS_GRAPH_DEGRADED under `revision`
    (planner.under, as NoteCrashLoop); a rollback follows. `detail`: what is missing."""

    release_key: str
    revision: str | None
    sequence: int | None
    detail: str
    degraded_sec: float


class NoteRestoreFailed(Step, frozen=True):
    """The running release cannot be restored (its artifacts cannot be had): it failed
    with `code` under `revision` (as NoteCrashLoop), and a rollback to a known good at
    hand follows."""

    release_key: str
    code: ReasonCode
    revision: str | None
    sequence: int | None


class Rollback(Step, frozen=True):
    """Restore `target_key` (None: there is none, stop the runtime)."""

    failed_key: str
    target_key: str | None
    causes: list[ReasonCode]


class StopRuntime(Step, frozen=True):
    reason: str


PassVerdictKind = Literal["converged", "blocked", "rejected", "failed", "settled", "idle"]

# The verdicts that are news for the cloud; "settled" (the failure was already reported)
# and "idle" (no desired state yet) never make a report.
REPORTED: dict[str, ReconcileStatus] = {
    "converged": ReconcileStatus.CONVERGED,
    "blocked": ReconcileStatus.BLOCKED,
    "rejected": ReconcileStatus.REJECTED,
    "failed": ReconcileStatus.FAILED,
}


@dataclass(frozen=True)
class PassVerdict:
    """How a reconcile pass ended (the rollout's gate verdicts are domain.rollout_rules')."""

    kind: PassVerdictKind
    codes: tuple[ReasonCode, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Steps to run now. `verdict` None: look again after them; else the pass is over."""

    steps: tuple[Step, ...] = ()
    verdict: PassVerdict | None = None
