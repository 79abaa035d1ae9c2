"""What the journal says, derived by folding its events (see fold.py).

Mutable on purpose: the fold updates it in place, event by event. Everyone else reads it.
Every field has a default, so a snapshot written by an older agent still decodes.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from muto.agent.journal.events import DesiredVerified, PassFailed, ReportKind, Step
from muto.domain.desired import AgentConfig
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.domain.reports import ReconcileStatus

GENESIS = "0" * 64  # the chain value before the first event
KNOWN_GOOD_KEPT = 3  # the running release and the ones before it (rollback targets)
REPORTED_KEPT = 8  # revisions whose last report is remembered


class Base(msgspec.Struct, kw_only=True, rename="camel"):
    pass


class InFlight(Base):
    """A step that changes what runs, started and not yet finished."""

    step: Step
    release_key: str
    revision: str | None
    sequence: int | None
    restore: bool = False


class Failure(Base):
    """How a release failed on this vehicle, under which revision."""

    revision: str | None
    sequence: int | None
    status: ReconcileStatus
    codes: list[ReasonCode]


class RollbackDue(Base):
    failed_key: str
    causes: list[ReasonCode]
    revision: str | None
    sequence: int | None
    # Its last try was refused for want of disk (RollbackFailed.blocked): the failure is
    # reported; the next pass tries again, and a try that fails the same says nothing new.
    blocked: bool = False


class Outcome(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A reconcile verdict for one revision: what a reconcile report says."""

    revision: str | None
    sequence: int | None
    status: ReconcileStatus
    codes: list[ReasonCode] = []


class Held(Base):
    """The newest authentic desired state not accepted for want of trusted time."""

    revision: str
    sequence: int
    document_digest: str
    etag: str | None


class Pending(Base):
    report_id: str
    kind: ReportKind
    body: msgspec.Raw
    revision: str | None
    status: str
    codes: list[ReasonCode]


class Running(Base):
    """The release the journal says runs, and why (for `journal replay`). `revision` and
    `sequence`: what it runs under (the revision that applied it, whose failure rolled
    back to it, or a newer one naming it that was reported converged; a restore keeps
    them). A verdict on it (a crash loop, a failed restore) is made under them while the
    desired state wants another release (planner.under)."""

    key: str
    since: datetime
    position: int
    revision: str | None
    cause: str  # converged | rolled_back
    sequence: int | None = None


class LastApply(Base):
    sequence: int | None
    apply_sec: float | None = None
    readiness_sec: float | None = None


class JournalState(Base):
    position: int = 0  # events folded so far (the last event's position)
    chain: str = GENESIS
    last_at: datetime | None = None
    etag: str | None = None
    desired: DesiredVerified | None = None  # the highest accepted desired state
    held: Held | None = None  # a newer document held back: expiry not judged (DesiredHeld)
    config: AgentConfig = AgentConfig()
    running: Running | None = None
    known_good: list[str] = []  # oldest first; releases that passed readiness here
    releases: dict[str, StackRelease] = {}  # every release the agent may apply again
    release_digests: dict[str, str] = {}  # release key -> its manifest digest, as verified
    in_flight: InFlight | None = None
    rollback_due: RollbackDue | None = None
    failed: dict[str, Failure] = {}
    interruptions: dict[str, int] = {}  # "<sequence>:<step>" -> count
    unfinished_runs: int = 0  # runs in a row that died before finishing a reconcile pass
    pass_failed: PassFailed | None = None  # what passes keep failing on, until one completes
    gates: list[ReasonCode] | None = None
    gates_sequence: int | None = None
    unreported: Outcome | None = None  # an outcome whose report is not queued yet
    # The desired revision whose verdict is reported again, unchanged or not: a report on
    # an older revision (the running release failed under it) came after its last one,
    # and the cloud shows a vehicle's newest report as its status.
    restate: str | None = None
    # The last response rejected (its ETag) and the code: the same response judged the
    # same again is not journaled, so it is reported once. Any other response clears it.
    rejected: tuple[str | None, str] | None = None
    # Why nothing runs: the codes of the failure whose rollback had nowhere to go (or was
    # refused for want of disk), until a release runs or a desired state says "run
    # nothing"; stopping the runtime does not end it. Health says so even while a newer
    # revision's release waits (the failure was reported under the older one).
    halted: list[ReasonCode] | None = None
    reported: dict[str, Outcome] = {}  # revision ("" for none) -> last queued report
    last_health: list[str] | None = None  # status then codes of the last health report
    outbox: dict[str, Pending] = {}  # report id -> report, in queueing order
    last_apply: LastApply | None = None
    incarnation: str | None = None  # chosen with the journal (its first AgentStarted)
    reports_numbered: int = 0  # reconcile reports numbered so far (never goes back)

    @property
    def running_key(self) -> str | None:
        return self.running.key if self.running else None

    @property
    def accepted_sequence(self) -> int:
        """The sequence of the newest verified desired state (0: none): a notify at or
        below it is old news."""
        return self.desired.sequence if self.desired is not None else 0

    def last_outcome(self, revision: str | None) -> Outcome | None:
        """What the cloud will have heard last about `revision` (an owed report counts)."""
        if self.unreported is not None and self.unreported.revision == revision:
            return self.unreported
        return self.reported.get(revision or "")

    def release(self, key: str | None) -> StackRelease | None:
        return self.releases.get(key) if key else None

    def previous_known_good(self) -> str | None:
        """The known good release before the running one."""
        running = self.running_key
        for key in reversed(self.known_good):
            if key != running:
                return key
        return None
