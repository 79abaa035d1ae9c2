"""The reports the agent queues in its outbox: reconcile outcomes and periodic health.

Each gets a fresh random id: the cloud de-duplicates by it, so it must never repeat,
not even after the data dir is wiped. Each also carries its place in the journal (this
run's incarnation; a reconcile report the journal's next report number, a health report
the position it is queued at): the cloud orders a vehicle's reports by it, never by the
vehicle's clock (muto/domain/report_order.py).
"""

from __future__ import annotations

import errno
import uuid
from datetime import datetime

import msgspec

from muto.agent.disk import disk_full
from muto.agent.journal.events import PassFailed, ReportQueued
from muto.agent.journal.state import JournalState, Outcome
from muto.agent.journal.store import SQLITE_FULL, sqlite_code, sqlite_error
from muto.agent.runtime.base import RuntimeStatus
from muto.domain.desired import StackRef
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.report_order import ReportPlace
from muto.domain.reports import (
    HealthReport,
    HealthStatus,
    ReconcileReport,
    ReconcileStatus,
    Timings,
)
from muto.domain.wire import encode

DETAIL_CHARS = 500
# Outcomes after which the desired release is not applied again (nothing runs: why).
ENDED = frozenset({ReconcileStatus.FAILED, ReconcileStatus.REJECTED})


def new_report_id() -> str:
    return uuid.uuid4().hex


def new_incarnation() -> str:
    """A journal's, chosen at its first start (journaled in AgentStarted): a wiped or
    replaced journal gets a new one, so the cloud sees its count restart."""
    return uuid.uuid4().hex


def running_ref(state: JournalState) -> StackRef | None:
    """What runs, with the manifest digest it was verified with: after a rollback too
    (the rolled-back-to release is not the desired one)."""
    release = state.release(state.running_key)
    if release is None:
        return None
    digest = state.release_digests.get(release.key)
    return StackRef(name=release.stack_name, version=release.version, manifest_digest=digest)


def reconcile_event(
    vehicle_id: str, state: JournalState, outcome: Outcome, now: datetime
) -> ReportQueued:
    last = state.last_apply
    timed = last is not None and outcome.sequence is not None and last.sequence == outcome.sequence
    timings = (
        Timings(apply_sec=last.apply_sec, readiness_sec=last.readiness_sec)
        if timed and last is not None
        else Timings()
    )
    number = state.reports_numbered + 1
    place = (
        ReportPlace(incarnation=state.incarnation, number=number)
        if state.incarnation is not None
        else None  # a journal no agent started (tools, tests): the legacy order
    )
    report = ReconcileReport(
        schema="muto.reconcile-report.v1",
        report_id=new_report_id(),
        vehicle_id=vehicle_id,
        desired_state_revision=outcome.revision,
        sequence=outcome.sequence,
        status=outcome.status,
        reason_codes=list(outcome.codes),
        running=running_ref(state),
        timings=timings,
        observed_at=now,
        journal=place,
    )
    return ReportQueued(
        at=now,
        report_id=report.report_id,
        kind="reconcile",
        body=msgspec.Raw(encode(report)),
        revision=outcome.revision,
        status=str(outcome.status),
        codes=list(outcome.codes),
        number=number if place is not None else None,
    )


def health_of(state: JournalState, runtime: RuntimeStatus) -> tuple[HealthStatus, list[ReasonCode]]:
    """The stack's health, and the agent's own: while its passes fail (PassFailed) it can
    neither apply nor roll back, so the vehicle is at least degraded, with that code."""
    status, codes = _stack_health(state, runtime)
    failed = state.pass_failed
    return (status, codes) if failed is None else _with_failure(status, codes, failed.code)


def _with_failure(
    status: HealthStatus, codes: list[ReasonCode], code: ReasonCode
) -> tuple[HealthStatus, list[ReasonCode]]:
    """An agent that cannot act is at least degraded, with the failure's code."""
    if code in codes:
        return status, codes
    return (HealthStatus.DEGRADED if status is HealthStatus.HEALTHY else status), [*codes, code]


def _stack_health(
    state: JournalState, runtime: RuntimeStatus
) -> tuple[HealthStatus, list[ReasonCode]]:
    running = state.running_key
    if runtime.crash_looping:
        return HealthStatus.UNHEALTHY, [ReasonCode.CRASH_LOOP_DETECTED]
    if running is not None and (runtime.release != running or not runtime.alive):
        return HealthStatus.UNHEALTHY, [ReasonCode.STACK_NOT_RUNNING]
    if running is not None and runtime.degraded is not None:
        return HealthStatus.UNHEALTHY, [ReasonCode.ROS_GRAPH_DEGRADED]
    if running is None:
        return _nothing_runs(state)
    return HealthStatus.HEALTHY, []


def _nothing_runs(state: JournalState) -> tuple[HealthStatus, list[ReasonCode]]:
    """Why nothing runs: nothing is wanted (healthy), the wanted release is on its way
    (NOT_YET_APPLIED: downloading, held by a gate, first apply unfinished), or it ended
    here and will not be applied again: failed or rejected (that outcome's codes, e.g.
    CRASH_LOOP_DETECTED + NO_PREVIOUS_KNOWN_GOOD), or failed under a later sequence (the
    failure's codes, as the planner's rule 9 holds it back)."""
    desired = state.desired
    if desired is None or desired.release is None:
        return HealthStatus.HEALTHY, []
    last = state.last_outcome(desired.revision)
    if last is not None and last.codes and last.status in ENDED:
        return HealthStatus.UNHEALTHY, list(last.codes)
    failure = state.failed.get(desired.release.key)
    if (
        failure is not None
        and failure.codes
        and failure.sequence is not None
        and desired.sequence <= failure.sequence
    ):
        return HealthStatus.UNHEALTHY, list(failure.codes)
    if state.halted:  # the release that ran failed with nowhere to roll back to
        return HealthStatus.UNHEALTHY, [*state.halted, ReasonCode.NOT_YET_APPLIED]
    return HealthStatus.DEGRADED, [ReasonCode.NOT_YET_APPLIED]


def pass_failure(exc: BaseException, now: datetime) -> PassFailed:
    """What an unexpected failure of a reconcile pass says: its code (a ReasonError's own;
    a full disk or quota INSUFFICIENT_DISK; anything else AGENT_ERROR) and its kind,
    `error`, the same each time it recurs (no temp file name), so it is journaled once."""
    if isinstance(exc, ReasonError):
        code, error = exc.code, f"ReasonError: {exc}"
    elif isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        full = disk_full(exc)
        code = ReasonCode.INSUFFICIENT_DISK if full else ReasonCode.AGENT_ERROR
        error = f"{type(exc).__name__} [{name}]"
    elif (found := sqlite_error(exc)) is not None:
        full = sqlite_code(exc) == SQLITE_FULL
        code = ReasonCode.INSUFFICIENT_DISK if full else ReasonCode.AGENT_ERROR
        error = f"{type(found).__name__} [{getattr(found, 'sqlite_errorname', '?')}]"
    else:
        code, error = ReasonCode.AGENT_ERROR, f"{type(exc).__name__}: {exc}"
    detail = f"{type(exc).__name__}: {exc}"
    return PassFailed(at=now, code=code, error=error[:DETAIL_CHARS], detail=detail[:DETAIL_CHARS])


def health_report(
    vehicle_id: str,
    state: JournalState,
    runtime: RuntimeStatus,
    now: datetime,
    figures: dict[str, float] | None = None,
    failing: ReasonCode | None = None,
) -> HealthReport:
    """The vehicle's health now; `failing`: a failure the journal could not record (the
    agent then sends this report without the journal), merged as a journaled one is."""
    status, codes = health_of(state, runtime)
    if failing is not None:
        status, codes = _with_failure(status, codes, failing)
    # Its number: the journal position it is queued at. One the journal refused (sent
    # without it, `failing`) takes the last position: newer than every report queued so
    # far, older than the next, whatever order the two reach the cloud in.
    number = state.position if failing is not None else state.position + 1
    place = (
        ReportPlace(incarnation=state.incarnation, number=max(number, 1))
        if state.incarnation is not None
        else None
    )
    return HealthReport(
        schema="muto.health-report.v1",
        report_id=new_report_id(),
        vehicle_id=vehicle_id,
        status=status,
        reason_codes=codes,
        running=running_ref(state),
        metrics=figures
        if figures is not None
        else {"restarts": float(runtime.restart_count), "outbox": float(len(state.outbox))},
        observed_at=now,
        journal=place,
    )


def health_event(
    vehicle_id: str,
    state: JournalState,
    runtime: RuntimeStatus,
    now: datetime,
    figures: dict[str, float] | None = None,
) -> ReportQueued:
    """A health report; it replaces the newest undelivered health report when that says
    the same thing, so an offline vehicle's outbox grows with health changes, not time."""
    report = health_report(vehicle_id, state, runtime, now, figures)
    status, codes = report.status, report.reason_codes
    healths = [p for p in state.outbox.values() if p.kind == "health"]
    last = healths[-1] if healths else None
    same = last is not None and [last.status, *last.codes] == [str(status), *codes]
    return ReportQueued(
        at=now,
        report_id=report.report_id,
        kind="health",
        body=msgspec.Raw(encode(report)),
        revision=None,
        status=str(status),
        codes=codes,
        supersedes=last.report_id if same and last is not None else None,
    )
