"""Journal events: what the agent observed and decided, in the past tense.

A tagged union (`type` = class name). Stored types never change: a new field gets a
default, a renamed event is a new class. `at` is the agent's clock when it happened.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from muto.domain.desired import AgentConfig, DesiredStateDocument
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease

# The steps whose interruption the agent counts (they change what runs on the vehicle).
Step = Literal["apply", "readiness", "rollback"]
ReportKind = Literal["reconcile", "health"]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, rename="camel"):
    at: datetime


class AgentStarted(Event, frozen=True):
    agent_version: str
    runtime: str
    # The journal's incarnation: chosen at the journal's first start, then repeated; with
    # the journal's report count it places reports for the cloud (domain/report_order.py).
    # None in journals of older agents.
    incarnation: str | None = None


class DesiredReceived(Event, frozen=True):
    """A new document came over HTTP and was judged: verified or rejected (a 304 is not
    news and is not journaled; a document held for want of trusted time is DesiredHeld)."""

    revision: str | None
    sequence: int | None
    etag: str | None


class DesiredVerified(Event, frozen=True):
    """Signatures, vehicle, freshness and expiry passed, and the trust store accepted it."""

    revision: str
    sequence: int
    document: DesiredStateDocument
    release: StackRelease | None  # None: the document says "run nothing"
    document_digest: str
    release_digest: str | None


class DesiredRejected(Event, frozen=True):
    """A document that failed verification. `revision`, `sequence`: what it is reported
    under (intake.Intake._under): the document's own when its signature holds and it is
    this vehicle's; else the response's claim when it claims news, or None
    (DesiredReceived keeps what the response claimed)."""

    revision: str | None
    sequence: int | None
    code: ReasonCode
    detail: str = ""


class DesiredHeld(Event, frozen=True):
    """An authentic document (signatures, release binding, vehicle and freshness passed)
    that was not accepted because its expiry cannot be judged (`code` UNTRUSTED_CLOCK):
    reported `blocked` against its revision. Its ETag is kept apart from the journal's
    (`JournalState.held`), so a trusted clock fetches and verifies it again."""

    revision: str
    sequence: int
    document_digest: str
    etag: str | None
    code: ReasonCode = ReasonCode.UNTRUSTED_CLOCK
    detail: str = ""


class ReleaseKeysRotated(Event, frozen=True):
    """The trust store now trusts these release keys (`key_ids`, `threshold` of them):
    a signed KeyRotation delivered with the desired state, verified against the keys in
    force before it, was persisted. For people: the trust store is what verifies, the
    fold derives nothing from it."""

    version: int
    key_ids: list[str]
    threshold: int


class ReleaseKeysRotationRefused(Event, frozen=True):
    """A KeyRotation delivered with the desired state did not verify against the release
    keys in force (`in_force`, their key set version) and its own, at their thresholds,
    or is no KeyRotation (`version` None): the walk of the chain stopped there, the keys
    in force stayed and judged the document (this is not a rejection of it). Journaled
    once per refused rotation (once more after a restart). For people: the fold derives
    nothing from it."""

    version: int | None
    code: ReasonCode
    detail: str = ""
    in_force: int = 1


class ConfigApplied(Event, frozen=True):
    revision: str | None
    config: AgentConfig


class GatesEvaluated(Event, frozen=True):
    """Journaled only when the verdict differs from the last one for this revision."""

    revision: str
    sequence: int
    codes: list[ReasonCode]


class ArtifactCached(Event, frozen=True):
    digest: str
    size: int
    release_key: str


class ArtifactsVerified(Event, frozen=True):
    """Every artifact of a release was in the cache and matched its digest, before apply."""

    release_key: str
    digests: list[str]


class ArtifactFailed(Event, frozen=True):
    digest: str
    release_key: str
    code: ReasonCode
    detail: str = ""


class ArtifactEvicted(Event, frozen=True):
    digest: str


class ApplyStarted(Event, frozen=True):
    release_key: str
    revision: str | None
    sequence: int | None
    replacing: str | None
    restore: bool = False  # re-starting the release the journal says is running


class ApplySucceeded(Event, frozen=True):
    release_key: str
    apply_sec: float


class ApplyFailed(Event, frozen=True):
    release_key: str
    code: ReasonCode
    detail: str = ""
    # The revision and sequence the failure is judged under, decided when written, for a
    # failure with no apply in flight (a restore that could not get its artifacts: the
    # revision the running release runs under). None: the step in flight's, else the
    # desired state's (all that older journals knew).
    revision: str | None = None
    sequence: int | None = None
    # The release's files could not be put in place for want of disk, and the runtime
    # still runs what it ran: nothing was stopped, the release did not fail. The apply
    # is blocked (INSUFFICIENT_DISK) and tried again at the next pass; no rollback.
    blocked: bool = False


class ReadinessPassed(Event, frozen=True):
    release_key: str
    readiness_sec: float


class ReadinessTimedOut(Event, frozen=True):
    release_key: str
    detail: str = ""


class CrashLoopDetected(Event, frozen=True):
    release_key: str
    during: Literal["readiness", "running"]
    detail: str = ""
    # A running release's crash loop: the revision and sequence it is judged under,
    # decided when written (the one the release runs under, unless the desired state
    # wants that very release). None (during readiness; older journals): the step in
    # flight's, else the desired state's.
    revision: str | None = None
    sequence: int | None = None


class GraphDegraded(Event, frozen=True):
    """The running release's ROS graph stayed degraded (`RuntimeStatus.degraded`: a node
    gone, a topic silent or too slow) for `degraded_sec`, longer than its grace (the
    release's readinessTimeoutSec, planner.degraded_grace_s): the release failed with
    ROS_GRAPH_DEGRADED under `revision` and `sequence` (planner.under, decided when
    written, as for a running release's CrashLoopDetected); a rollback follows."""

    release_key: str
    detail: str = ""
    degraded_sec: float = 0.0
    revision: str | None = None
    sequence: int | None = None


class DriftDetected(Event, frozen=True):
    expected: str | None
    observed: str | None


class RollbackStarted(Event, frozen=True):
    failed_key: str
    target_key: str | None
    causes: list[ReasonCode]


class RollbackApplied(Event, frozen=True):
    failed_key: str
    target_key: str
    causes: list[ReasonCode]
    readiness_sec: float


class RollbackFailed(Event, frozen=True):
    failed_key: str
    target_key: str | None
    codes: list[ReasonCode]
    detail: str = ""
    # The target could not be put in place for want of disk (INSUFFICIENT_DISK): nothing
    # about it failed. It stays known good and the rollback stays due, tried again at the
    # next pass (as a blocked ApplyFailed); the failure is reported meanwhile.
    blocked: bool = False


class RuntimeStopped(Event, frozen=True):
    reason: str


class Interrupted(Event, frozen=True):
    """Found at start-up: the agent died during `step`. `gave_up` once it happened
    `count` >= the retry limit times for this revision and step."""

    step: Step
    release_key: str
    revision: str | None
    sequence: int | None
    count: int
    gave_up: bool


class RestartLoopDetected(Event, frozen=True):
    """Found at start-up: the last `runs` runs all died before finishing a reconcile
    pass while `revision` was pending, with no step in flight to blame (those are
    counted by Interrupted). The agent gives the revision up (RETRY_LIMIT_REACHED) and
    rolls back to the previous known good."""

    release_key: str
    revision: str
    sequence: int
    runs: int


class PassCompleted(Event, frozen=True):
    """The run's first reconcile pass reached a verdict (journaled once per run, and
    again by the first pass that completes after a PassFailed): this run is not part of
    a restart loop, and passes no longer fail."""

    verdict: str


class AgentStopped(Event, frozen=True):
    """A planned stop (SIGTERM, SIGINT) ended the run: the step in progress finished or
    was abandoned (StepAbandoned). Not a death: the restart-loop count starts over."""


class PassFailed(Event, frozen=True):
    """A reconcile pass failed unexpectedly (the data dir takes no writes, the trust store
    cannot be read, a bug). Journaled once per distinct failure (`error`: its kind, the
    same however often it recurs); health carries `code` until a pass completes."""

    code: ReasonCode
    error: str
    detail: str = ""


class PassPreempted(Event, frozen=True):
    """A pass stopped short to take a newer desired state first: a download cut (its
    partial kept) or an apply held back, because `sequence` was announced (a notify, or a
    poll during a download: unverified) above the `accepted` one. For people: the fold
    derives nothing from it; the pass fetches the newer document next."""

    stopped: Literal["download", "apply"]
    sequence: int
    accepted: int
    release_key: str
    digests: list[str] = []  # the downloads cut


class StepAbandoned(Event, frozen=True):
    """A planned shutdown cut a wait short (not counted as an interruption)."""

    step: Step


class ReportQueued(Event, frozen=True):
    report_id: str
    kind: ReportKind
    body: msgspec.Raw  # the exact JSON the cloud receives
    revision: str | None
    status: str
    codes: list[ReasonCode]
    supersedes: str | None = None  # an undelivered health report this one replaces
    number: int | None = None  # a reconcile report's number in this journal (1, 2, ...)


class ReportDelivered(Event, frozen=True):
    report_id: str
    via: str


class ReportDropped(Event, frozen=True):
    """The cloud refused the report for good (4xx): kept out of the outbox's way."""

    report_id: str
    reason: str


JournalEvent = (
    AgentStarted
    | DesiredReceived
    | DesiredVerified
    | DesiredRejected
    | DesiredHeld
    | ReleaseKeysRotated
    | ReleaseKeysRotationRefused
    | ConfigApplied
    | GatesEvaluated
    | ArtifactCached
    | ArtifactsVerified
    | ArtifactFailed
    | ArtifactEvicted
    | ApplyStarted
    | ApplySucceeded
    | ApplyFailed
    | ReadinessPassed
    | ReadinessTimedOut
    | CrashLoopDetected
    | GraphDegraded
    | DriftDetected
    | RollbackStarted
    | RollbackApplied
    | RollbackFailed
    | RuntimeStopped
    | Interrupted
    | RestartLoopDetected
    | PassCompleted
    | AgentStopped
    | PassFailed
    | PassPreempted
    | StepAbandoned
    | ReportQueued
    | ReportDelivered
    | ReportDropped
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in JournalEvent.__args__  # type: ignore[attr-defined]
}
