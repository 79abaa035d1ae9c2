"""The pure planner: this observed vehicle plus this desired state gives these steps.

Invariants (tests/unit/test_agent_planner.py and test_agent_planner_drift.py check them
for all inputs):
- a converged vehicle whose outcome was reported gets an empty plan;
- while any gate blocks, no plan applies a release other than the one the journal says
  is running (restoring it after drift is not a change); rollbacks are never held back;
- a failure in flight is always followed by a rollback before anything else is planned;
  one whose target was refused for want of disk (RollbackDue.blocked) is tried once a
  pass: the pass that refused it ends `settled` (its failure reported), the next tries;
- a release that failed here under a sequence >= the desired one is not applied again;
- a verdict is reported once per revision: only when it differs from the last report
  on it, or when a report on an older revision came after that one (`restate`);
- a verdict on the running release (a crash loop, a restore) is made under the revision
  it runs under, not a newer desired one that wants another release (`under`): that
  revision's release never ran here, and is still applied when the gates allow;
- a running release whose ROS graph has stayed degraded longer than its grace
  (`degraded_grace_s`: its readinessTimeoutSec) failed with ROS_GRAPH_DEGRADED, under the
  revision it runs under (`under`), and is rolled back; a shorter degradation is only
  reported (health `unhealthy` ROS_GRAPH_DEGRADED), never acted on;
- a "run nothing" desired state (no release) stops what runs, as the gates allow, and
  is converged exactly when nothing runs; it never applies a release;
- the running release is restored when the runtime runs something else, nothing, or
  reports it down (`Observed.stack_down`), never while it runs or restarts under the
  runtime's own supervision (the crash-loop rule judges those restarts);
- a restore whose artifacts failed to download this pass is not planned again in it:
  the running release failed (a rollback to a known good at hand follows), or, with none
  at hand, the pass ends ARTIFACT_DOWNLOAD_FAILED and a later one tries again;
- an artifact the runtime fetches itself (podman's image) is a download like the cache's:
  missing, it is a FetchArtifacts step, so the gates are judged after it;
- a release the runtime could not put in place, with what runs kept (executor._blocked:
  a full disk, the pull of an image removed since it was fetched), is for the rest of
  the pass what a download that failed so would be: `blocked` INSUFFICIENT_DISK or `failed`
  ARTIFACT_DOWNLOAD_FAILED, not condemned; the next pass tries again.
"""

from __future__ import annotations

from datetime import datetime

from muto.agent.journal.events import DesiredVerified
from muto.agent.journal.fold import outcome_key
from muto.agent.journal.state import JournalState, Outcome
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.steps import (
    REPORTED,
    Apply,
    AwaitReadiness,
    FetchArtifacts,
    NoteCrashLoop,
    NoteGates,
    NoteGraphDegraded,
    NoteRestoreFailed,
    PassVerdict,
    Plan,
    QueueReport,
    Rollback,
    Step,
    StopRuntime,
)
from muto.agent.runtime.base import RuntimeStatus
from muto.domain.compat import VehicleFacts, check_compatibility
from muto.domain.desired import Policy
from muto.domain.gates import evaluate_gates
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease

DISK = ReasonCode.INSUFFICIENT_DISK
LOST = ReasonCode.ARTIFACT_DOWNLOAD_FAILED
# The least grace a degraded ROS graph gets, whatever the release's readiness timeout:
# one drift check (5 s): a degradation is seen at three checks before it is acted on.
DEGRADED_GRACE_MIN_S = 5.0


def plan(desired: DesiredVerified | None, observed: Observed, now: datetime) -> Plan:
    s, runtime = observed.journal, observed.runtime
    owed: tuple[Step, ...] = (QueueReport(outcome=s.unreported),) if s.unreported else ()
    if s.in_flight is not None:
        if s.in_flight.step == "readiness":
            return Plan((*owed, AwaitReadiness(release_key=s.in_flight.release_key)))
        # Only an agent that died mid-step leaves one; start-up recovery settles it first.
        return Plan(owed, PassVerdict("settled"))
    if s.rollback_due is not None:
        due = s.rollback_due
        target = rollback_target(s, due.failed_key)
        if due.blocked and refused(s.release(target), observed):
            # Its target was refused for want of disk in this pass (rollback.Restorer): the
            # failure is reported; the next pass tries again, not this one.
            return Plan(owed, PassVerdict("settled"))
        return Plan(
            (*owed, Rollback(failed_key=due.failed_key, target_key=target, causes=due.causes))
        )
    running = s.running_key
    if running is not None and runtime.release == running and runtime.crash_looping:
        revision, sequence = under(s, desired, running)
        return Plan(
            (*owed, NoteCrashLoop(release_key=running, revision=revision, sequence=sequence))
        )
    if graph_failed(s, runtime, observed.degraded_s):
        assert running is not None and observed.degraded_s is not None
        revision, sequence = under(s, desired, running)
        failed = NoteGraphDegraded(
            release_key=running,
            revision=revision,
            sequence=sequence,
            detail=runtime.degraded or "",
            degraded_sec=observed.degraded_s,
        )
        return Plan((*owed, failed))
    if desired is not None and desired.release is None:
        return _run_nothing(desired, observed, desired.document.policy, now, owed)
    if running is not None and not_running(s, runtime, observed.stack_down):
        toward = None
        if desired is not None:
            toward = _toward(desired, observed, desired.document.policy, now, owed)
            if any(isinstance(step, Apply) for step in toward.steps):
                # The desired release can be applied now: restoring the old one first would
                # only switch twice, and a restore that kills the agent would spend the new
                # revision's retries and condemn the known good. A failure rolls back to it.
                return toward
        if restore_lost(observed):
            return _restore_lost(desired, observed, owed, toward)
        revision, sequence = under(s, desired, running)
        restore = Apply(
            release_key=running,
            revision=revision,
            sequence=sequence,
            replacing=runtime.release,
            restore=True,
        )
        return Plan((*owed, restore))
    if running is None and runtime.release is not None:
        return Plan((*owed, StopRuntime(reason="the journal says nothing runs")))
    if desired is None:
        return Plan(owed, PassVerdict("idle"))
    return _toward(desired, observed, desired.document.policy, now, owed)


def under(
    s: JournalState, desired: DesiredVerified | None, key: str
) -> tuple[str | None, int | None]:
    """The revision and sequence a verdict on `key`, the running release, is made under:
    the desired state's when it wants `key` (or the journal does not say what `key` runs
    under); else the one `key` runs under (`Running`). A crash loop of release A while a
    newer revision waits with release B (gates, a slow download) is about A: reported
    under B's revision it would count a rollback against B, which never ran here."""
    wanted = desired is not None and desired.release is not None and desired.release.key == key
    running = s.running
    if not wanted and running is not None and running.key == key and running.revision:
        return running.revision, running.sequence
    return (desired.revision, desired.sequence) if desired is not None else (None, None)


def degraded_grace_s(release: StackRelease) -> float:
    """How long a running release's ROS graph may stay degraded before the release has
    failed: its healthModel.readinessTimeoutSec (the time it is given to make its graph
    whole at start is the time it is given to make it whole again), at least
    DEGRADED_GRACE_MIN_S. A topic hiccup shorter than that is reported, not rolled back."""
    return max(release.health_model.readiness_timeout_sec, DEGRADED_GRACE_MIN_S)


def graph_failed(s: JournalState, runtime: RuntimeStatus, degraded_s: float | None) -> bool:
    """The journal's running release runs and its ROS graph has been degraded without a
    break for longer than its grace (so, judged at drift checks 5 s apart, it is acted on
    at the first check past the grace: 10 s after it was first seen, at the 5 s least)."""
    running = s.release(s.running_key)
    return (
        running is not None
        and runtime.release == running.key
        and runtime.degraded is not None
        and degraded_s is not None
        and degraded_s > degraded_grace_s(running)
    )


def not_running(s: JournalState, runtime: RuntimeStatus, stack_down: bool) -> bool:
    """The journal's running release is not running: the runtime runs another release or
    nothing, or reports it down for good (a container removed outside muto)."""
    running = s.running_key
    return running is not None and (runtime.release != running or stack_down)


def drifted(
    s: JournalState, runtime: RuntimeStatus, stack_down: bool, degraded_s: float | None = None
) -> bool:
    """What the runtime shows needs a pass now: the running release crash-loops, is not
    running, its ROS graph stayed degraded past its grace, or something runs that the
    journal does not say runs."""
    running = s.running_key
    if running is None:
        return runtime.release is not None
    return (
        (runtime.release == running and runtime.crash_looping)
        or graph_failed(s, runtime, degraded_s)
        or not_running(s, runtime, stack_down)
    )


def restore_lost(observed: Observed) -> bool:
    """The running release is not running and cannot be restored in this pass: one of
    its artifacts failed to download (a damaged cache, the cloud out of reach)."""
    s = observed.journal
    release = s.release(s.running_key)
    return (
        release is not None
        and not_running(s, observed.runtime, observed.stack_down)
        and bool(_unavailable(release, observed))
    )


def refused(release: StackRelease | None, observed: Observed) -> bool:
    """`release` could not be put in place for want of disk in this pass."""
    return release is not None and any(
        observed.download_failures.get(a.digest) == DISK for a in release.artifacts
    )


def _unavailable(release: StackRelease, observed: Observed) -> list[str]:
    return [a.digest for a in release.artifacts if a.digest in observed.download_failures]


def _at_hand(release: StackRelease, observed: Observed) -> bool:
    """Every artifact `release` needs is at hand: in the cache, or (an image) in the store
    of the runtime that fetches it itself."""
    return not _unavailable(release, observed) and all(
        a.digest in observed.cached for a in release.artifacts
    )


def _restore_lost(
    d: DesiredVerified | None, observed: Observed, owed: tuple[Step, ...], toward: Plan | None
) -> Plan:
    """A failed restore, like any: the running release failed, and the rollback that
    follows restores the previous known good, if its artifacts are at hand (offline, one
    that must be downloaded would only fail too, and condemn it). Without one, the desired
    release's downloads go on (`toward`, still fetching: it may yet replace the lost one),
    else the pass ends ARTIFACT_DOWNLOAD_FAILED; the release is not condemned for want of
    a network, and the next poll tries again (not every drift check: each try is
    journaled). A full disk is INSUFFICIENT_DISK and `blocked`, as for any download."""
    s = observed.journal
    release = s.release(s.running_key)
    assert release is not None
    failures = {observed.download_failures[d] for d in _unavailable(release, observed)}
    code = DISK if DISK in failures else LOST
    target = s.release(rollback_target(s, release.key))
    if target is not None and _at_hand(target, observed):
        revision, sequence = under(s, d, release.key)
        failed = NoteRestoreFailed(
            release_key=release.key, code=code, revision=revision, sequence=sequence
        )
        return Plan((*owed, failed))
    if toward is not None and toward.verdict is None:
        return toward
    verdict = PassVerdict("blocked" if code == DISK else "failed", (code,))
    if d is None:
        return Plan(owed, verdict)
    return _final(s, d, owed, verdict)


def _toward(
    d: DesiredVerified, observed: Observed, policy: Policy, now: datetime, owed: tuple[Step, ...]
) -> Plan:
    """The runtime matches the journal: how to get from there to `d`."""
    s, release = observed.journal, d.release
    assert release is not None  # "run nothing" is planned by _run_nothing
    key = release.key
    facts = VehicleFacts.of(observed.vehicle)
    incompatible = [c for c in check_compatibility(release, facts) if c != DISK]
    if incompatible:
        return _final(s, d, owed, PassVerdict("rejected", tuple(incompatible)))
    if key == s.running_key:
        return _final(s, d, owed, PassVerdict("converged"))
    failure = s.failed.get(key)
    if failure is not None and failure.sequence is not None and d.sequence <= failure.sequence:
        if failure.revision == d.revision:
            return _final(s, d, owed, PassVerdict("settled", tuple(failure.codes)))
        return _final(s, d, owed, PassVerdict("blocked", (ReasonCode.RELEASE_PREVIOUSLY_FAILED,)))
    if now >= d.document.expires_at:
        return _final(s, d, owed, PassVerdict("rejected", (ReasonCode.DESIRED_STATE_EXPIRED,)))
    steps = list(owed)
    gates = evaluate_gates(
        policy, observed.vehicle, now, release.resource_profile.disk_mb_min, observed.floor
    )
    if (gates, d.sequence) != (s.gates, s.gates_sequence):
        steps.append(NoteGates(revision=d.revision, sequence=d.sequence, codes=gates))
    missing = [a.digest for a in release.artifacts if a.digest not in observed.cached]
    if gates:
        if missing and DISK not in gates and not observed.download_failures:
            steps.append(FetchArtifacts(release_key=key, digests=missing))
        return _final(s, d, tuple(steps), PassVerdict("blocked", tuple(gates)))
    # Downloads that failed this pass, and releases the runtime could not put in place
    # (a full disk, a pull that failed; what runs was kept: executor._blocked).
    failed = [a.digest for a in release.artifacts if a.digest in observed.download_failures]
    failures = {observed.download_failures[digest] for digest in failed}
    if DISK in failures:
        return _final(s, d, tuple(steps), PassVerdict("blocked", (DISK,)))
    if failures:
        verdict = PassVerdict("failed", (ReasonCode.ARTIFACT_DOWNLOAD_FAILED,))
        return _final(s, d, tuple(steps), verdict)
    if missing:
        return Plan((*steps, FetchArtifacts(release_key=key, digests=missing)))
    apply = Apply(
        release_key=key, revision=d.revision, sequence=d.sequence, replacing=s.running_key
    )
    return Plan((*steps, apply))


def _run_nothing(
    d: DesiredVerified, observed: Observed, policy: Policy, now: datetime, owed: tuple[Step, ...]
) -> Plan:
    """A revision that says "run nothing" (a rollback with no release to go back to):
    stop what runs, then converged. Stopping changes the vehicle, so the gates hold it
    back like any change; an expired document is rejected like any other."""
    s = observed.journal
    if s.running_key is None and observed.runtime.release is None:
        return _final(s, d, owed, PassVerdict("converged"))
    if now >= d.document.expires_at:
        return _final(s, d, owed, PassVerdict("rejected", (ReasonCode.DESIRED_STATE_EXPIRED,)))
    steps = list(owed)
    gates = evaluate_gates(policy, observed.vehicle, now, 0, observed.floor)
    if (gates, d.sequence) != (s.gates, s.gates_sequence):
        steps.append(NoteGates(revision=d.revision, sequence=d.sequence, codes=gates))
    if gates:
        return _final(s, d, tuple(steps), PassVerdict("blocked", tuple(gates)))
    return Plan((*steps, StopRuntime(reason="the desired state says run nothing")))


def _final(
    s: JournalState, d: DesiredVerified, steps: tuple[Step, ...], verdict: PassVerdict
) -> Plan:
    status = REPORTED.get(verdict.kind)
    if status is None:
        return Plan(steps, verdict)
    outcome = Outcome(
        revision=d.revision, sequence=d.sequence, status=status, codes=[*verdict.codes]
    )
    last = last_outcome(s, d.revision)
    if last is None or outcome_key(last) != outcome_key(outcome) or s.restate == d.revision:
        steps = (*steps, QueueReport(outcome=outcome))
    return Plan(steps, verdict)


def last_outcome(s: JournalState, revision: str | None) -> Outcome | None:
    """What the cloud will have heard last about `revision` (an owed report counts)."""
    return s.last_outcome(revision)


def rollback_target(s: JournalState, failed_key: str) -> str | None:
    """The newest known good release other than the one that failed."""
    for key in reversed(s.known_good):
        if key != failed_key and key in s.releases:
            return key
    return None
