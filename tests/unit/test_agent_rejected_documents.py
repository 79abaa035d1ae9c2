"""Rejected documents and blocked applies, on the agent rig.

A rejected document's ETag is never the fetch's (it is fetched in full and judged again
at every poll), an unchanged rejection is reported once, and the desired revision's
verdict is said again after a rejection that is not news (a replay, an unauthentic
document). A full disk while a release is prepared, with what runs untouched, is
`blocked` INSUFFICIENT_DISK and tried again, not a failure rolled back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.journal.journal import fold_records
from muto.domain.desired import DesiredStateBundle
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.trust import Signer
from tests.support.agent_rig import A, B, Rig, Signers, converged_on, restarted, run, started

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def forged(rig: Rig, target: StackRelease, sequence: int) -> DesiredStateBundle:
    """The document as the rig's cloud would sign it, signed by a key nobody trusts."""
    return Signers(release=rig.signers.release, control_plane=Signer.generate()).bundle(
        target, sequence
    )


def count(rig: Rig, kind: type[ev.Event]) -> int:
    return sum(isinstance(r.event, kind) for r in rig.journal.records())


def test_a_bundle_tampered_in_transit_is_fetched_again_once_the_path_is_clean() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        genuine = rig.cloud.bundle
        rig.cloud.bundle = forged(rig, B, 2)  # a proxy rewrites the payload, not the ETag
        assert (await rig.reconcile()).kind == "converged"  # still on A's revision
        assert (await rig.reconcile()).kind == "converged"  # judged again: not news
        assert count(rig, ev.DesiredRejected) == 1
        rig = await restarted(rig)
        rig.cloud.bundle = genuine  # the path passes traffic through again: same ETag
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [B.key]
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            ("dsr_2", "rejected", ["VERIFY_SIGNATURE_FAILED"]),
            ("dsr_2", "converged", []),
        ]

    run(scenario)


def test_a_document_rejected_for_a_clock_ahead_is_accepted_once_the_clock_is_right() -> None:
    async def scenario() -> None:
        rig = await started()
        rig.clock.at += timedelta(days=40)
        rig.cloud.serve(rig.signers.bundle(A, 1))
        for _ in range(3):
            assert (await rig.reconcile()).kind == "idle"
        assert count(rig, ev.DesiredRejected) == 1  # judged at every poll, journaled once
        rig.clock.at -= timedelta(days=40)
        rig = await restarted(rig)
        assert (await rig.reconcile()).kind == "converged"
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "rejected", ["DESIRED_STATE_EXPIRED"]),
            ("dsr_1", "converged", []),
        ]

    run(scenario)


def test_a_replayed_old_bundle_is_reported_once_and_the_desired_verdict_restated() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        old = rig.cloud.bundle
        assert old is not None
        await converged_on(rig, B, 2)
        current = rig.cloud.bundle
        assert current is not None
        rig.cloud.serve(old)
        for _ in range(3):
            assert (await rig.reconcile()).kind == "converged"
        rig.cloud.serve(current)  # the replay stops
        assert (await rig.reconcile()).kind == "converged"
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            ("dsr_2", "converged", []),
            ("dsr_1", "rejected", ["STALE_REVISION"]),  # under the replayed, signed one
            ("dsr_2", "converged", []),  # the fleet view ends on the truth
        ]
        assert rig.runtime.applied == [A.key, B.key]

    run(scenario)


def test_a_forged_bundle_naming_the_accepted_revision_does_not_flip_its_verdict() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.cloud.serve(forged(rig, A, 1))  # claims dsr_1, at every poll
        for _ in range(4):
            assert (await rig.reconcile()).kind == "converged"
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            # Its claim is unsigned: under no revision, so a rollout counting dsr_1 never
            # reads `rejected` for a vehicle that runs it.
            (None, "rejected", ["VERIFY_SIGNATURE_FAILED"]),
            ("dsr_1", "converged", []),
        ]

    run(scenario)


def test_a_rejected_documents_etag_is_not_the_journals() -> None:
    journal = Journal.memory()
    at = T0
    journal.append(
        ev.DesiredReceived(at=at, revision="dsr_1", sequence=1, etag='"e1"'),
        ev.DesiredRejected(at=at, revision="dsr_1", sequence=1, code=ReasonCode.STALE_REVISION),
    )
    state = fold_records(journal.records())
    assert state.etag is None
    assert state.unreported is not None
    # What was rejected, so that intake journals the same response judged the same once.
    assert state.rejected == ('"e1"', "STALE_REVISION")
    journal.append(ev.DesiredReceived(at=at, revision="dsr_1", sequence=1, etag='"e2"'))
    assert fold_records(journal.records()).rejected is None  # another response came


def full_disk(
    rig: Rig, stops_first: bool = False, code: ReasonCode = ReasonCode.INSUFFICIENT_DISK
) -> None:
    """The runtime's apply of B cannot put it in place (a full disk; an image whose pull
    failed: `code`): while B is prepared (what runs is untouched), or after it stopped
    what ran."""
    runtime, apply = rig.runtime, rig.runtime.apply

    async def apply_b(release: StackRelease, artifacts: Mapping[str, Path]) -> None:
        if release.key != B.key:
            return await apply(release, artifacts)
        if stops_first:
            await runtime.stop()
        raise ReasonError(code, "No space left on device / podman pull: connection refused")

    runtime.apply = apply_b  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("code", "kind"),
    [(ReasonCode.INSUFFICIENT_DISK, "blocked"), (ReasonCode.ARTIFACT_DOWNLOAD_FAILED, "failed")],
)
def test_a_release_not_put_in_place_keeps_what_runs_and_is_tried_again(
    code: ReasonCode, kind: str
) -> None:
    """A full disk, or a registry down for the apply's own pull (an image removed since
    the agent fetched it), before what runs is stopped: the pass ends as a download's
    failure would, and the release is not condemned (a registry blip rolled a canary
    back, for good)."""

    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        apply = rig.runtime.apply
        full_disk(rig, code=code)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        for _ in range(2):
            verdict = await rig.reconcile()
            assert (verdict.kind, verdict.codes) == (kind, (code,))
        state = rig.journal.state
        assert state.running_key == A.key and rig.runtime.status().release == A.key
        assert B.key not in state.failed and state.rollback_due is None
        assert count(rig, ev.RollbackStarted) == 0
        rig.runtime.apply = apply  # type: ignore[method-assign]  # space freed, registry up
        rig.vehicle.set(free_disk_mb=200_000)  # the agent sees the room made
        assert (await rig.reconcile()).kind == "converged"
        assert rig.journal.state.running_key == B.key
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            ("dsr_2", kind, [str(code)]),
            ("dsr_2", "converged", []),
        ]

    run(scenario)


def test_a_first_release_whose_image_did_not_come_is_tried_again() -> None:
    """Nothing runs yet (a fresh vehicle): the pull's failure is no failure of B either."""

    async def scenario() -> None:
        rig = await started()
        apply = rig.runtime.apply
        full_disk(rig, code=ReasonCode.ARTIFACT_DOWNLOAD_FAILED)
        rig.cloud.serve(rig.signers.bundle(B, 1))
        verdict = await rig.reconcile()
        assert (verdict.kind, verdict.codes) == ("failed", (ReasonCode.ARTIFACT_DOWNLOAD_FAILED,))
        assert B.key not in rig.journal.state.failed
        rig.runtime.apply = apply  # type: ignore[method-assign]
        assert (await rig.reconcile()).kind == "converged"

    run(scenario)


def test_a_full_disk_after_what_ran_was_stopped_is_a_failure_rolled_back() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        full_disk(rig, stops_first=True)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        await rig.reconcile()
        assert rig.journal.state.running_key == A.key
        assert count(rig, ev.RollbackApplied) == 1
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "rolled_back",
            ["INSUFFICIENT_DISK", "ROLLBACK_APPLIED"],
        )

    run(scenario)


def test_the_accepted_document_with_another_release_is_no_verdict_on_its_revision() -> None:
    """An on-path attacker serves the vehicle's own accepted, genuine document with a
    release it signed itself: rejected once, under no revision (the accepted revision
    runs fine; a rollout counting it must not read `rejected`), then the truth again; the
    same response at every later poll is neither journaled nor reported again."""

    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        genuine = rig.cloud.bundle
        assert genuine is not None
        other = Signers(release=Signer.generate(), control_plane=rig.signers.control_plane)
        rig.cloud.serve(msgspec.structs.replace(genuine, release=other.bundle(A, 1).release))
        for _ in range(3):
            assert (await rig.reconcile()).kind == "converged"
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            (None, "rejected", ["VERIFY_SIGNATURE_FAILED"]),
            ("dsr_1", "converged", []),
        ]
        assert count(rig, ev.DesiredRejected) == 1

    run(scenario)


def test_a_second_tampering_is_news() -> None:
    """A forged bundle, then the genuine one, then weeks later another forgery: each
    incident is journaled and reported (the second was dropped as 'the same verdict')."""

    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        genuine = rig.cloud.bundle
        assert genuine is not None

        def forged(target: StackRelease, sequence: int) -> DesiredStateBundle:
            foreign = Signers(release=rig.signers.release, control_plane=Signer.generate())
            return foreign.bundle(target, sequence)

        rig.cloud.serve(forged(A, 1))
        await rig.reconcile()
        rig.cloud.serve(genuine)
        await rig.reconcile()
        await converged_on(rig, B, 2)
        rig.cloud.serve(forged(B, 2))
        await rig.reconcile()
        await rig.deliver()
        assert count(rig, ev.DesiredRejected) == 2
        rejected = [r for r in rig.cloud.reconcile_reports() if r[1] == "rejected"]
        assert rejected == [(None, "rejected", ["VERIFY_SIGNATURE_FAILED"])] * 2

    run(scenario)
