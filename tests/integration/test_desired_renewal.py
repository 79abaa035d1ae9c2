"""A vehicle away longer than its desired state's lifetime refuses the document as
expired when it returns; the cloud then re-signs the same revision for a fresh lifetime
under the vehicle's next sequence (commands.renew_desired_state, through Ingest), so the
vehicle converges instead of running what it had forever."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import assign_desired_state, record_reconcile
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileReport, ReconcileStatus
from muto.trust.desired_state import open_desired_state
from muto.trust.keys import public_pem
from muto.trust.keyset import KeySet
from tests.support.releases import signed_release
from tests.support.spine import (
    cause,
    desired_request,
    memory_settings,
    reconcile_report,
    register_fleet,
    registration,
)

VEHICLE = "v-eu-m3-1"
ISSUED = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
LIFETIME = timedelta(days=30)


class Plane:
    def __init__(self, data_dir: Path) -> None:
        self.now = ISSUED
        self.cp = ControlPlane.open(memory_settings(data_dir))
        self.cp.clock = lambda: self.now
        register_fleet(self.cp, [registration(VEHICLE, ring="1")])
        self.release = signed_release(version="1.0.0")
        self.cp.execute(self.release.register())
        self.keys = KeySet(keys=[public_pem(self.cp.signing.signer.public_key)])
        self.reports = 0

    def assign(self) -> str:
        request = desired_request("ring=1", self.release)
        command = assign_desired_state(request, [VEHICLE], cause(), self.cp.sign, now=self.cp.clock)
        return self.cp.execute(command).value.revision

    def report(self, revision: str | None, status: ReconcileStatus, *codes: ReasonCode) -> None:
        self.reports += 1
        report = reconcile_report(
            VEHICLE, f"r{self.reports}", status, revision=revision, reason_codes=codes
        )
        asyncio.run(self.cp.ingest.reconcile(report, f"vehicle:{VEHICLE}"))
        self.cp.projector.catch_up()

    def refused_as_expired(self, revision: str) -> None:
        self.report(revision, ReconcileStatus.REJECTED, ReasonCode.DESIRED_STATE_EXPIRED)

    def latest(self) -> tuple[str, int, datetime, datetime]:
        found = self.cp.queries.desired_document(VEHICLE)
        assert found is not None
        document, _ = open_desired_state(found.decoded_envelope(), self.keys)  # verified
        assert (document.revision, document.sequence) == (found.revision, found.sequence)
        return found.revision, found.sequence, document.issued_at, document.expires_at


def expired_refusal(revision: str, report_id: str) -> ReconcileReport:
    return reconcile_report(
        VEHICLE,
        report_id,
        ReconcileStatus.REJECTED,
        revision=revision,
        reason_codes=(ReasonCode.DESIRED_STATE_EXPIRED,),
    )


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    p = Plane(tmp_path)
    yield p
    p.cp.close()


def test_a_document_refused_as_expired_is_signed_again_for_a_fresh_lifetime(
    plane: Plane,
) -> None:
    revision = plane.assign()
    assert plane.latest() == (revision, 1, ISSUED, ISSUED + LIFETIME)
    plane.now = ISSUED + timedelta(days=31)  # the vehicle was away: it returns now
    plane.refused_as_expired(revision)
    assert plane.latest() == (revision, 2, plane.now, plane.now + LIFETIME)
    # the renewal keeps the same intent: release, rollout, correlation
    history = [
        e for e in plane.cp.queries.audit(vehicle_id=VEHICLE) if e.event_type.endswith("Assigned")
    ]
    first, renewed = (e.data["assignment"] for e in history)
    same = ("revision", "releaseKey", "manifestDigest", "rolloutId", "phase", "correlationId")
    assert {k: renewed[k] for k in same} == {k: first[k] for k in same}
    assert history[-1].actor == "cloud:renewal"
    # the vehicle now converges on the revision it refused
    plane.report(revision, ReconcileStatus.CONVERGED)
    row = plane.cp.queries.vehicle(VEHICLE)
    assert (row.desired_revision, row.last_status) == (revision, "converged")


def test_no_renewal_for_a_vehicle_whose_clock_runs_ahead(plane: Plane) -> None:
    """By the cloud's clock the document is far from its end: the refusal is the
    vehicle's clock, not the document, and a new signature each report would not help."""
    revision = plane.assign()
    plane.now = ISSUED + timedelta(days=2)
    plane.refused_as_expired(revision)
    assert plane.latest()[:2] == (revision, 1)
    plane.now = ISSUED + LIFETIME - timedelta(days=2)  # within the last tenth: believed
    plane.refused_as_expired(revision)
    assert plane.latest()[:2] == (revision, 2)


def test_no_renewal_for_a_revision_that_is_no_longer_the_vehicles(plane: Plane) -> None:
    old = plane.assign()
    new = plane.assign()
    plane.now = ISSUED + timedelta(days=31)
    plane.refused_as_expired(old)  # a late report about the document before
    assert plane.latest()[:2] == (new, 2)
    plane.report(new, ReconcileStatus.REJECTED, ReasonCode.VERIFY_SIGNATURE_FAILED)
    assert plane.latest()[:2] == (new, 2)  # refused for another reason: not renewed


def test_a_redelivered_refusal_renews_once(plane: Plane) -> None:
    revision = plane.assign()
    plane.now = ISSUED + timedelta(days=31)
    report = expired_refusal(revision, "r-once")
    for _ in range(3):  # the courier may deliver it again (a retry, another transport)
        asyncio.run(plane.cp.ingest.reconcile(report, f"vehicle:{VEHICLE}"))
    assert plane.latest()[:2] == (revision, 2)
    assert plane.cp.execute(record_reconcile(report, "x")).value is False


def test_a_refusal_resent_after_its_renewal_failed_is_renewed(plane: Plane) -> None:
    """The code review's case: the report was stored, the renewal after it failed (the
    database away); the resend (the agent's after a 503, the MQTT listener's retry) finds
    the report already stored and renewed nothing, so the vehicle kept an expired
    document until an operator assigned again."""
    revision = plane.assign()
    plane.now = ISSUED + timedelta(days=31)
    report = expired_refusal(revision, "r-resent")
    assert plane.cp.execute(record_reconcile(report, f"vehicle:{VEHICLE}")).value is True
    assert plane.latest()[:2] == (revision, 1)  # stored; the renewal never came
    asyncio.run(plane.cp.ingest.reconcile(report, f"vehicle:{VEHICLE}"))  # the resend
    assert plane.latest()[:2] == (revision, 2)
