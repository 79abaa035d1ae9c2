"""The fold: how each journal event changes the derived state.

Deterministic and self-contained (no clock, no I/O, no settings): replaying the same
events always gives the same state, which is what lets the agent restart from its
journal. Decisions are made before an event is written and carried inside it
(`ev.Interrupted.gave_up`), never re-made here.
"""

from __future__ import annotations

from muto.agent.journal import events as ev
from muto.agent.journal.state import (
    KNOWN_GOOD_KEPT,
    REPORTED_KEPT,
    Failure,
    Held,
    InFlight,
    JournalState,
    LastApply,
    Outcome,
    Pending,
    RollbackDue,
    Running,
)
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus


def evolve(state: JournalState, event: ev.Event) -> None:
    """Apply one event (already numbered: `state.position` is its position)."""
    state.last_at = event.at
    match event:  # the cases are tried in order: reports, most of any journal, first
        case ev.ReportQueued():
            _queued(state, event)
        case ev.ReportDelivered() | ev.ReportDropped():
            state.outbox.pop(event.report_id, None)
        case ev.AgentStarted():
            state.unfinished_runs += 1
            state.incarnation = event.incarnation or state.incarnation
        case ev.PassCompleted():
            state.unfinished_runs = 0
            state.pass_failed = None
        case ev.AgentStopped():
            # A planned stop breaks a run of deaths, and ends the step in flight as
            # abandoned, never interrupted (an apply finished with its readiness owed):
            # the next run plans it again from what runs, its readiness judged anew.
            state.unfinished_runs = 0
            state.in_flight = None
        case ev.PassFailed():
            state.pass_failed = event
        case ev.RestartLoopDetected():
            under = (event.revision, event.sequence)
            _failed(state, event.release_key, [ReasonCode.RETRY_LIMIT_REACHED], under)
        case ev.DesiredReceived():
            state.etag = event.etag
            state.rejected = None  # a rejection that follows sets it again
            # A document judged after the held one: the held one is no longer the news,
            # and fetching with its ETag would only bring this one back to be re-judged.
            state.held = None
        case ev.DesiredVerified():
            state.desired = event
            due = state.rollback_due
            if due is not None and due.blocked and event.sequence > (due.sequence or 0):
                # A newer desired state outranks a rollback the disk refused (its failure
                # reported, its target still known good): the operator's answer is taken.
                state.rollback_due = None
            if state.restate != event.revision:
                state.restate = None  # a newer revision's first verdict is news anyway
            if event.release is None:
                state.halted = None  # "run nothing" is met by nothing running
            if event.release is not None and event.release_digest is not None:
                state.releases[event.release.key] = event.release
                state.release_digests[event.release.key] = event.release_digest
            state.gates = state.gates_sequence = None
            prefix = f"{event.sequence}:"
            state.interruptions = {
                k: n for k, n in state.interruptions.items() if k.startswith(prefix)
            }
            _prune_releases(state)
        case ev.DesiredRejected():
            _rejected(state, event)
        case ev.DesiredHeld():
            # state.etag stays: once the clock is trusted the fetch must bring this
            # document back to be verified, not a 304.
            state.held = Held(
                revision=event.revision,
                sequence=event.sequence,
                document_digest=event.document_digest,
                etag=event.etag,
            )
            held = Outcome(
                revision=event.revision,
                sequence=event.sequence,
                status=ReconcileStatus.BLOCKED,
                codes=[event.code],
            )
            last = state.last_outcome(event.revision)
            if last is None or outcome_key(last) != outcome_key(held):
                state.unreported = held  # once per revision, whatever the ETag does
        case ev.ConfigApplied():
            state.config = event.config
        case ev.GatesEvaluated():
            state.gates, state.gates_sequence = list(event.codes), event.sequence
        case ev.ApplyStarted():
            state.in_flight = InFlight(
                step="apply",
                release_key=event.release_key,
                revision=event.revision,
                sequence=event.sequence,
                restore=event.restore,
            )
        case ev.ApplySucceeded():
            if state.in_flight is not None:
                state.in_flight.step = "readiness"
                state.last_apply = LastApply(
                    sequence=state.in_flight.sequence, apply_sec=event.apply_sec
                )
        case ev.ApplyFailed() if event.blocked:
            state.in_flight = None  # what runs was never touched: nothing failed
        case ev.ApplyFailed():
            _failed(state, event.release_key, [event.code], _judged(event))
        case ev.ReadinessTimedOut():
            _failed(state, event.release_key, [ReasonCode.READINESS_TIMEOUT])
        case ev.CrashLoopDetected():
            _failed(state, event.release_key, [ReasonCode.CRASH_LOOP_DETECTED], _judged(event))
        case ev.GraphDegraded():
            _failed(state, event.release_key, [ReasonCode.ROS_GRAPH_DEGRADED], _judged(event))
        case ev.ReadinessPassed():
            flight, was = state.in_flight, state.running
            if state.last_apply is not None:
                state.last_apply.readiness_sec = event.readiness_sec
            state.failed.pop(event.release_key, None)
            if (
                flight is not None
                and flight.restore
                and was is not None
                and was.key == flight.release_key
            ):
                # A restore re-starts what ran: it still runs under the same revision, for
                # the same cause (a restore of older agents carried the desired revision).
                _run(state, event.release_key, (was.revision, was.sequence), was.cause)
            else:
                ran: tuple[str | None, int | None] = (
                    (flight.revision, flight.sequence) if flight else (None, None)
                )
                _run(state, event.release_key, ran, "converged")
        case ev.RollbackStarted():
            due = state.rollback_due
            state.in_flight = InFlight(
                step="rollback",
                release_key=event.target_key or event.failed_key,
                revision=due.revision if due else None,
                sequence=due.sequence if due else None,
            )
        case ev.RollbackApplied():
            codes = [*event.causes, ReasonCode.ROLLBACK_APPLIED]
            judged = _settle(state, event.failed_key, ReconcileStatus.ROLLED_BACK, codes)
            _run(state, event.target_key, judged, "rolled_back")
        case ev.RollbackFailed():
            _rollback_failed(state, event)
        case ev.RuntimeStopped():
            # `halted` stays: a failed rollback stops the runtime too, and health must
            # still say why nothing runs ("run nothing" ends it: DesiredVerified).
            state.running = None
        case ev.Interrupted():
            _interrupted(state, event)
        case ev.StepAbandoned():
            state.in_flight = None
        case _:
            pass  # informational: recorded for people, changes nothing derived


def _rejected(state: JournalState, event: ev.DesiredRejected) -> None:
    # No rejected document's ETag: a 304 to it would keep the vehicle from ever judging
    # the genuine document again. The next fetch is unconditional; the accepted document,
    # served again, brings its ETag back (DesiredReceived). What was rejected is kept so
    # that the same response, judged the same, is not journaled again (intake).
    state.rejected = (state.etag, str(event.code))
    state.etag = None
    state.unreported = Outcome(
        revision=event.revision,
        sequence=event.sequence,
        status=ReconcileStatus.REJECTED,
        codes=[event.code],
    )
    desired = state.desired
    if desired is not None and (event.sequence is None or event.sequence <= desired.sequence):
        # A document that is not news (a replayed older one, or one whose revision is
        # unknown: unauthentic): its rejection will be the vehicle's newest report, so the
        # desired revision's verdict is said again after it. A newer revision's rejection
        # is the news itself, and stays the vehicle's status.
        state.restate = desired.revision


def outcome_key(outcome: Outcome) -> tuple[str | None, str, tuple[str, ...]]:
    return outcome.revision, str(outcome.status), tuple(outcome.codes)


def _judged(
    event: ev.ApplyFailed | ev.CrashLoopDetected | ev.GraphDegraded,
) -> tuple[str | None, int | None] | None:
    """The revision and sequence the event's writer judged the failure under, or None
    (the event does not say: a step in flight's, or an older journal's)."""
    return None if event.revision is None else (event.revision, event.sequence)


def _failed(
    state: JournalState,
    key: str,
    causes: list[ReasonCode],
    under: tuple[str | None, int | None] | None = None,
) -> None:
    """`key` failed here under revision and sequence `under` (default: those of the step
    in flight, else of the desired state in force; a running release's failure says its
    own, decided when its event was written): it stops being known good and a rollback
    is due."""
    if under is None:
        flight, desired = state.in_flight, state.desired
        source = flight or desired
        under = (source.revision, source.sequence) if source else (None, None)
    revision, sequence = under
    state.in_flight = None
    # Separate lists: state must never alias one list in two places (a snapshot would not).
    state.failed[key] = Failure(
        revision=revision, sequence=sequence, status=ReconcileStatus.FAILED, codes=list(causes)
    )
    _forget_good(state, key)
    state.rollback_due = RollbackDue(
        failed_key=key, causes=list(causes), revision=revision, sequence=sequence
    )


def _rollback_failed(state: JournalState, event: ev.RollbackFailed) -> None:
    due = state.rollback_due
    _settle(state, event.failed_key, ReconcileStatus.FAILED, list(event.codes))
    if event.blocked and due is not None:
        # The target was refused for want of disk, not for what it is: it stays known
        # good, and the rollback stays due (the planner tries it again at the next pass).
        due.blocked = True
        state.rollback_due = due
    elif event.target_key is not None:
        _forget_good(state, event.target_key)
    state.running, state.halted = None, list(event.codes)


def _settle(
    state: JournalState, failed_key: str, status: ReconcileStatus, codes: list[ReasonCode]
) -> tuple[str | None, int | None]:
    """A rollback finished: record the failure's final status and owe a report (unless
    it is a try of a rollback refused for want of disk that failed the same way again:
    the cloud has heard it). Returns the revision and sequence it was judged under."""
    due = state.rollback_due
    revision, sequence = (due.revision, due.sequence) if due else (None, None)
    state.failed[failed_key] = Failure(
        revision=revision, sequence=sequence, status=status, codes=list(codes)
    )
    outcome = Outcome(revision=revision, sequence=sequence, status=status, codes=list(codes))
    heard = state.last_outcome(revision)
    state.in_flight = state.rollback_due = None
    said = heard is not None and outcome_key(heard) == outcome_key(outcome)
    if due is not None and due.blocked and said:
        return revision, sequence
    state.unreported = outcome
    desired = state.desired
    if desired is not None and revision != desired.revision:
        # A failure of the release that ran under an older revision: its report will be
        # the vehicle's newest, so the desired revision's verdict is said again after it.
        state.restate = desired.revision
    return revision, sequence


def _run(state: JournalState, key: str, under: tuple[str | None, int | None], cause: str) -> None:
    assert state.last_at is not None
    state.in_flight = state.halted = None
    revision, sequence = under
    state.running = Running(
        key=key,
        since=state.last_at,
        position=state.position,
        revision=revision,
        sequence=sequence,
        cause=cause,
    )
    state.known_good = [k for k in state.known_good if k != key][-(KNOWN_GOOD_KEPT - 1) :]
    state.known_good.append(key)
    _prune_releases(state)


def _forget_good(state: JournalState, key: str) -> None:
    state.known_good = [k for k in state.known_good if k != key]


def _interrupted(state: JournalState, event: ev.Interrupted) -> None:
    state.in_flight = None
    state.interruptions[f"{event.sequence}:{event.step}"] = event.count
    if not event.gave_up:
        return  # the planner resumes: applies again, or rolls back again
    limit = ReasonCode.RETRY_LIMIT_REACHED
    due = state.rollback_due
    if event.step == "rollback" and due is not None:
        if limit not in due.causes:
            due.causes.append(limit)
        if event.release_key == due.failed_key:
            # Even the rollback with no target (stop the runtime) kept killing the agent:
            # nothing is left to try. Settle it, or the agent would retry it forever.
            codes = [*due.causes, ReasonCode.NO_PREVIOUS_KNOWN_GOOD]
            _settle(state, due.failed_key, ReconcileStatus.FAILED, codes)
            state.running, state.halted = None, list(codes)
            return
        # The rollback target itself kept killing the agent: the planner picks the next.
        _forget_good(state, event.release_key)
        return
    _failed(state, event.release_key, [limit], (event.revision, event.sequence))


def _queued(state: JournalState, event: ev.ReportQueued) -> None:
    if event.supersedes is not None:
        state.outbox.pop(event.supersedes, None)
    state.outbox[event.report_id] = Pending(
        report_id=event.report_id,
        kind=event.kind,
        body=event.body,
        revision=event.revision,
        status=event.status,
        codes=list(event.codes),
    )
    if event.kind == "health":
        state.last_health = [event.status, *event.codes]
        return
    if event.number is not None:
        state.reports_numbered = max(state.reports_numbered, event.number)
    if event.revision is not None and event.revision == state.restate:
        state.restate = None
    desired, running = state.desired, state.running
    if (
        event.status == ReconcileStatus.CONVERGED
        and desired is not None
        and desired.release is not None
        and event.revision == desired.revision
        and running is not None
        and running.key == desired.release.key
    ):
        # Converged without an apply (a newer revision names the release that runs): it
        # runs under that revision now, and a later failure of it is judged there.
        running.revision, running.sequence = desired.revision, desired.sequence
        running.cause = "converged"
    outcome = Outcome(
        revision=event.revision,
        sequence=None,
        status=ReconcileStatus(event.status),
        codes=list(event.codes),
    )
    state.reported.pop(event.revision or "", None)  # re-insert: newest last
    state.reported[event.revision or ""] = outcome
    while len(state.reported) > REPORTED_KEPT:
        del state.reported[next(iter(state.reported))]
    if state.unreported is not None and outcome_key(state.unreported) == outcome_key(outcome):
        state.unreported = None


def _prune_releases(state: JournalState) -> None:
    keep = set(state.known_good)
    if state.running is not None:
        keep.add(state.running.key)
    if state.desired is not None and state.desired.release is not None:
        keep.add(state.desired.release.key)
    if state.in_flight is not None:
        keep.add(state.in_flight.release_key)
    state.releases = {k: r for k, r in state.releases.items() if k in keep}
    state.release_digests = {k: d for k, d in state.release_digests.items() if k in keep}
