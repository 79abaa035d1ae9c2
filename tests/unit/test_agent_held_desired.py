"""A vehicle whose clock is untrusted still fetches and authenticates its desired state,
but cannot judge its expiry: the document is held (never accepted, never applied) and
reported `blocked` UNTRUSTED_CLOCK against its revision, once, so the cloud sees the
gate instead of silence (a rollout defers the vehicle, docs/rollouts.md). Once the clock
is trusted the same document is fetched and verified again and accepted if not expired.
A document that fails verification for another reason is rejected as with a trusted
clock (the clock is judged after signatures, binding, vehicle and freshness)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import msgspec
import pytest

from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.journal.fold import evolve
from muto.agent.journal.journal import fold_records
from muto.agent.journal.state import JournalState, Outcome
from muto.agent.reconcile.intake import Intake
from muto.agent.transport.http import Fetched, NotFetched
from muto.agent.trust import MemoryTrust
from muto.domain.desired import DesiredStateBundle
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus
from muto.trust import Signer
from tests.support.agent_rig import (
    T0,
    VEHICLE,
    A,
    B,
    FakeCloud,
    ManualClock,
    Signers,
    converged_on,
    run,
    started,
)

CLOCK = ReasonCode.UNTRUSTED_CLOCK


def held_event(revision: str = "dsr_2", sequence: int = 2, etag: str | None = '"e2"') -> ev.Event:
    return ev.DesiredHeld(
        at=T0, revision=revision, sequence=sequence, document_digest="sha256:d2", etag=etag
    )


def blocked(revision: str = "dsr_2", sequence: int | None = 2) -> Outcome:
    return Outcome(
        revision=revision, sequence=sequence, status=ReconcileStatus.BLOCKED, codes=[CLOCK]
    )


# The fold, on plain data.


def test_a_held_document_owes_a_blocked_report_and_keeps_the_journal_etag() -> None:
    state = JournalState(etag='"e1"')
    evolve(state, held_event())
    assert state.unreported == blocked()
    assert state.etag == '"e1"'  # a trusted clock must not get a 304 for it
    assert state.desired is None
    assert state.held is not None and state.held.etag == '"e2"'


def test_a_held_document_is_reported_once_whatever_its_etag_does() -> None:
    state = JournalState()
    evolve(state, held_event())
    report = ev.ReportQueued(
        at=T0,
        report_id="r1",
        kind="reconcile",
        body=msgspec.Raw(b"{}"),
        revision="dsr_2",
        status="blocked",
        codes=[CLOCK],
    )
    evolve(state, report)
    assert state.unreported is None
    evolve(state, held_event(etag='"e2b"'))  # the same revision again, a new ETag
    assert state.unreported is None
    assert state.held is not None and state.held.etag == '"e2b"'


def test_a_document_judged_after_the_held_one_replaces_it() -> None:
    state = JournalState()
    evolve(state, held_event())
    evolve(state, ev.DesiredReceived(at=T0, revision="dsr_3", sequence=3, etag='"e3"'))
    assert state.held is None and state.etag == '"e3"'


def test_journals_without_held_documents_replay_as_before() -> None:
    journal = Journal.memory()
    journal.append(
        ev.DesiredReceived(at=T0, revision="dsr_1", sequence=1, etag='"e1"'),
        ev.DesiredRejected(at=T0, revision="dsr_1", sequence=1, code=ReasonCode.WRONG_VEHICLE),
    )
    state = fold_records(journal.records())
    assert state.held is None and state.etag is None  # a rejected document's ETag is never kept
    assert state.unreported is not None and state.unreported.status == ReconcileStatus.REJECTED


# The intake, on fakes: a fake cloud, an in-memory trust store and journal.


@dataclass
class Bench:
    signers: Signers = field(default_factory=Signers)
    cloud: FakeCloud = field(default_factory=FakeCloud)
    journal: Journal = field(default_factory=Journal.memory)
    clock: ManualClock = field(default_factory=ManualClock)
    trust: MemoryTrust = field(init=False)
    intake: Intake = field(init=False)

    def __post_init__(self) -> None:
        self.trust = MemoryTrust(self.signers.trust)
        self.intake = Intake(VEHICLE, self.cloud, self.trust, self.journal, self.clock)

    def new_events(self, after: int) -> list[ev.Event]:
        return [r.event for r in self.journal.records(after)]


def test_an_untrusted_clock_fetches_holds_and_does_not_accept() -> None:
    async def scenario() -> None:
        bench = Bench()
        bench.cloud.serve(bench.signers.bundle(A, 1))
        assert await bench.intake.run(clock_trusted=False) is None
        assert bench.cloud.fetches == 1  # a fetch is harmless
        (held,) = bench.new_events(0)
        assert isinstance(held, ev.DesiredHeld)
        assert (held.revision, held.sequence, held.code) == ("dsr_1", 1, CLOCK)
        state = bench.journal.state
        assert state.desired is None  # nothing acts on it
        assert bench.trust.trusted.sequence == 0  # the floor did not move
        assert state.unreported == blocked("dsr_1", 1)

    run(scenario)


def test_the_held_document_is_not_news_while_the_clock_stays_untrusted() -> None:
    async def scenario() -> None:
        bench = Bench()
        bench.cloud.serve(bench.signers.bundle(A, 1))
        await bench.intake.run(clock_trusted=False)
        position = bench.journal.state.position
        for _ in range(3):
            missed = await bench.intake.run(clock_trusted=False)
            assert missed is not None and missed.why == "not_modified"
        assert bench.journal.state.position == position

    run(scenario)


def test_a_trusted_clock_verifies_the_held_document_again_and_accepts_it() -> None:
    async def scenario() -> None:
        bench = Bench()
        bench.cloud.serve(bench.signers.bundle(A, 1))
        await bench.intake.run(clock_trusted=False)
        position = bench.journal.state.position
        assert await bench.intake.run(clock_trusted=True) is None  # not a 304
        assert [type(e) for e in bench.new_events(position)] == [
            ev.DesiredReceived,
            ev.DesiredVerified,
        ]
        state = bench.journal.state
        assert state.desired is not None and state.desired.revision == "dsr_1"
        assert state.held is None
        assert bench.trust.trusted.sequence == 1

    run(scenario)


def test_a_held_document_that_expired_meanwhile_is_rejected_once_the_clock_is_trusted() -> None:
    async def scenario() -> None:
        bench = Bench()
        bench.cloud.serve(bench.signers.bundle(A, 1, ttl=timedelta(hours=2)))
        await bench.intake.run(clock_trusted=False)
        bench.clock.advance(3 * 3600)
        await bench.intake.run(clock_trusted=True)
        rejected = bench.new_events(0)[-1]
        assert isinstance(rejected, ev.DesiredRejected)
        assert rejected.code == ReasonCode.DESIRED_STATE_EXPIRED
        assert bench.journal.state.desired is None and bench.trust.trusted.sequence == 0

    run(scenario)


def test_the_accepted_document_again_is_not_held() -> None:
    async def scenario() -> None:
        bench = Bench()
        bundle = bench.signers.bundle(A, 1)
        bench.cloud.serve(bundle)
        await bench.intake.run(clock_trusted=True)
        bench.cloud.serve(bundle)  # the same document under a new ETag
        position = bench.journal.state.position
        await bench.intake.run(clock_trusted=False)
        assert [type(e) for e in bench.new_events(position)] == [ev.DesiredReceived]
        assert bench.journal.state.held is None and bench.journal.state.unreported is None

    run(scenario)


def test_a_cloud_that_ignores_if_none_match_does_not_make_the_held_document_news() -> None:
    @dataclass
    class Stubborn:
        bundle: DesiredStateBundle

        async def latest(self, etag: str | None) -> Fetched | NotFetched:
            return Fetched(self.bundle, '"e1"', "dsr_1", 1)

    async def scenario() -> None:
        bench = Bench()
        bench.intake.source = Stubborn(bench.signers.bundle(A, 1))
        await bench.intake.run(clock_trusted=False)
        position = bench.journal.state.position
        missed = await bench.intake.run(clock_trusted=False)
        assert missed is not None and missed.why == "not_modified"
        assert bench.journal.state.position == position

    run(scenario)


def _wrong_vehicle(s: Signers) -> DesiredStateBundle:
    return s.bundle(A, 2, vehicle_id="v-other")


def _bad_signature(s: Signers) -> DesiredStateBundle:
    return s.bundle(A, 2, release_signer=Signer.generate())


def _stale(s: Signers) -> DesiredStateBundle:
    return s.bundle(B, 1)  # sequence 1 again, another document


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (_wrong_vehicle, ReasonCode.WRONG_VEHICLE),
        (_bad_signature, ReasonCode.VERIFY_SIGNATURE_FAILED),
        (_stale, ReasonCode.STALE_REVISION),
    ],
)
def test_a_document_that_fails_for_another_reason_is_rejected_as_ever(
    make: Callable[[Signers], DesiredStateBundle], code: ReasonCode
) -> None:
    async def scenario() -> None:
        bench = Bench()
        bench.cloud.serve(bench.signers.bundle(A, 1))
        await bench.intake.run(clock_trusted=True)
        bench.cloud.serve(make(bench.signers))
        position = bench.journal.state.position
        await bench.intake.run(clock_trusted=False)
        events = bench.new_events(position)
        assert [type(e) for e in events] == [ev.DesiredReceived, ev.DesiredRejected]
        assert isinstance(events[1], ev.DesiredRejected) and events[1].code == code
        assert bench.journal.state.held is None

    run(scenario)


# A whole agent on fakes: what the cloud hears.


def test_the_agent_reports_blocked_once_keeps_running_then_converges_when_trusted() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.vehicle.set(clock_trusted=False)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        await rig.reconcile()
        position = rig.journal.state.position
        for _ in range(3):  # polls: no firehose
            await rig.reconcile()
        assert rig.journal.state.position == position
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            ("dsr_2", "blocked", ["UNTRUSTED_CLOCK"]),
        ]
        assert rig.runtime.applied == [A.key]  # nothing applied on an unjudged document

        again = rig.restart()  # the journal replays the hold: no second report
        await again.agent.start(loop=False)
        await again.reconcile()
        queued = [r.event for r in again.journal.records(position)]
        assert not [e for e in queued if isinstance(e, ev.ReportQueued) and e.kind == "reconcile"]

        again.vehicle.set(clock_trusted=True)
        assert (await again.reconcile()).kind == "converged"
        assert again.runtime.status().release == B.key
        await again.deliver()
        assert again.cloud.reconcile_reports()[-1] == ("dsr_2", "converged", [])
        assert [r for r in again.cloud.reconcile_reports() if r[0] == "dsr_2"] == [
            ("dsr_2", "blocked", ["UNTRUSTED_CLOCK"]),
            ("dsr_2", "converged", []),
        ]

    run(scenario)
