"""A control plane restored from a backup issued its vehicles fewer desired-state
documents than they accepted since: its next documents, under lower sequences, they
refuse (STALE_REVISION). A report that says the vehicle took a later sequence makes the
cloud re-issue the vehicle's desired state under the next sequence above it (once, actor
`cloud:reissue`), over HTTP and over MQTT alike (both end in Ingest.reconcile), and
every later document for the vehicle takes a sequence above the one it reported.

The restore itself is the log as it was at the backup: a vehicle assigned once here,
whose reports say what it took from the cloud before the restore."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, assign_desired_state
from muto.cloud.mqtt.listener import Listener
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.domain.messages import Leaf, vehicle_topic
from muto.domain.model.vehicle import MAX_BELIEVED_SEQUENCE
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileReport, ReconcileStatus
from muto.trust.desired_state import open_desired_state
from muto.trust.keys import public_pem
from muto.trust.keyset import KeySet
from tests.support.releases import signed_release
from tests.support.rollout_plane import CANARY, ROLLOUT
from tests.support.rollout_plane import Plane as RolloutPlane
from tests.support.spine import (
    cause,
    desired_request,
    reconcile_report,
    register_fleet,
    registration,
)

VEHICLE = "v-eu-m3-1"
BEFORE_RESTORE = "dsr_issued_before_the_restore"  # a revision this cloud never issued
ISSUED = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)


class Restored:
    """A restored control plane, its vehicle assigned release 1.0.0 once (sequence 1),
    and a way in for the vehicle's reports: the HTTP API or the MQTT listener."""

    def __init__(self, settings: Settings, transport: str) -> None:
        self.now = ISSUED
        self.cp = ControlPlane.open(settings)
        self.cp.clock = lambda: self.now
        register_fleet(self.cp, [registration(VEHICLE, ring="1")])
        self.release = signed_release(version="1.0.0")
        self.cp.execute(self.release.register())
        self.keys = KeySet(keys=[public_pem(self.cp.signing.signer.public_key)])
        self.transport = transport
        self.reports = 0
        secret, token = issue_token(Role.VEHICLE, VEHICLE, Cause.of("test"))
        self.cp.execute(token)
        self.client = TestClient(create_app(self.cp.settings, plane=self.cp)).__enter__()
        self.client.headers["Authorization"] = f"Bearer {secret}"
        self.listener = Listener(self.cp)

    def assign(self) -> tuple[str, int]:
        request = desired_request("ring=1", self.release)
        command = assign_desired_state(request, [VEHICLE], cause(), self.cp.sign, now=self.cp.clock)
        assigned = self.cp.execute(command).value
        return assigned.revision, assigned.sequences[VEHICLE]

    def report(
        self,
        revision: str | None,
        sequence: int | None,
        status: ReconcileStatus = ReconcileStatus.CONVERGED,
        *codes: ReasonCode,
    ) -> None:
        self.reports += 1
        body = reconcile_report(
            VEHICLE,
            f"r{self.reports}",
            status,
            revision=revision,
            sequence=sequence,
            reason_codes=codes,
            minute=self.reports,
        )
        self.deliver(body)

    def deliver(self, body: ReconcileReport) -> None:
        if self.transport == "http":
            answer = self.client.post("/reports/reconcile", content=msgspec.json.encode(body))
            assert answer.status_code == 200, answer.text
        else:
            topic = vehicle_topic(self.cp.settings.tenant, VEHICLE, Leaf.REPORTS_RECONCILE)
            asyncio.run(self.listener.handle(topic, msgspec.json.encode(body)))
            assert self.listener.dropped == 0
        self.cp.projector.catch_up()

    def latest(self) -> tuple[str, int, datetime, datetime]:
        """The vehicle's desired-state document as a poll gets it, verified."""
        found = self.cp.queries.desired_document(VEHICLE)
        assert found is not None
        document, _ = open_desired_state(found.decoded_envelope(), self.keys)
        assert (document.revision, document.sequence) == (found.revision, found.sequence)
        return found.revision, found.sequence, document.issued_at, document.expires_at

    def assignments(self) -> list[Any]:
        return [
            e
            for e in self.cp.queries.audit(vehicle_id=VEHICLE)
            if e.event_type.endswith("DesiredStateAssigned")
        ]

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.cp.close()


@pytest.fixture(params=["http", "mqtt"])
def restored(request: pytest.FixtureRequest, store_settings: Settings) -> Iterator[Restored]:
    plane = Restored(store_settings, request.param)
    yield plane
    plane.close()


def test_a_vehicle_ahead_of_the_restored_cloud_gets_its_desired_state_again(
    restored: Restored, caplog: pytest.LogCaptureFixture
) -> None:
    revision, sequence = restored.assign()
    assert sequence == 1
    # The vehicle refuses the restored cloud's document (it took sequence 3 before the
    # restore): a rejection is not what it took, and changes nothing.
    restored.report(revision, 1, ReconcileStatus.REJECTED, ReasonCode.STALE_REVISION)
    assert restored.latest()[:2] == (revision, 1)
    # Then it says again what it runs: converged on a revision this cloud never issued,
    # under sequence 3. The cloud re-issues its own intent above it, for a fresh lifetime.
    restored.now = ISSUED + timedelta(days=2)
    with caplog.at_level("WARNING", logger="muto.cloud"):
        restored.report(BEFORE_RESTORE, 3)
    assert restored.latest() == (revision, 4, restored.now, restored.now + timedelta(days=30))
    assert f"vehicle {VEHICLE} reported taking desired-state sequence 3, above the 1" in (
        caplog.text
    )
    first, again = (e.data["assignment"] for e in restored.assignments())
    same = ("revision", "releaseKey", "manifestDigest", "rolloutId", "phase", "correlationId")
    assert {k: again[k] for k in same} == {k: first[k] for k in same}
    assert restored.assignments()[-1].actor == "cloud:reissue"
    row = restored.cp.queries.vehicle(VEHICLE)
    assert (row.sequence, row.desired_revision) == (4, revision)
    # Once: another report under sequence 3 (before the vehicle fetched) changes nothing.
    restored.report(BEFORE_RESTORE, 3)
    assert restored.latest()[:2] == (revision, 4)
    assert len(restored.assignments()) == 2
    # The vehicle takes it and converges on the restored cloud's intent.
    restored.report(revision, 4)
    row = restored.cp.queries.vehicle(VEHICLE)
    assert (row.desired_revision, row.last_status) == (revision, "converged")
    # The next assignment goes on from there.
    assert restored.assign()[1] == 5


def test_a_vehicle_that_took_another_document_at_our_sequence_gets_ours_above_it(
    restored: Restored, caplog: pytest.LogCaptureFixture
) -> None:
    """The code review's case: the old cloud issued sequence 1 after the backup; the
    restored cloud's first assignment is sequence 1 again, another document. The vehicle
    refuses it (same sequence, other content) and says again what it runs under 1: not
    above ours, but another revision at it, so ours is re-issued under 2."""
    revision, sequence = restored.assign()
    assert sequence == 1
    restored.report(revision, 1, ReconcileStatus.REJECTED, ReasonCode.STALE_REVISION)
    with caplog.at_level("WARNING", logger="muto.cloud"):
        restored.report(BEFORE_RESTORE, 1)
    assert restored.latest()[:2] == (revision, 2)
    assert "sequence 1, another document at the 1 this cloud issued it" in caplog.text
    restored.report(revision, 2)
    restored.report(revision, 2)  # on ours: not ahead, nothing more
    assert len(restored.assignments()) == 2
    row = restored.cp.queries.vehicle(VEHICLE)
    assert (row.sequence, row.desired_revision, row.last_status) == (2, revision, "converged")


def test_a_vehicle_with_no_desired_state_here_is_given_the_next_above_what_it_took(
    restored: Restored,
) -> None:
    restored.report(BEFORE_RESTORE, 7)
    assert restored.cp.queries.desired_document(VEHICLE) is None  # nothing to re-issue
    assert restored.assignments() == []
    revision, sequence = restored.assign()
    assert sequence == 8
    assert restored.latest()[:2] == (revision, 8)
    restored.report(revision, 8)
    assert len(restored.assignments()) == 1  # it was not ahead any more: no re-issue


def test_a_sequence_no_document_carried_is_not_believed(restored: Restored) -> None:
    """A rejection names a document the vehicle did not take (and one that did not
    verify, a sequence anyone on the path can claim); a sequence past the bound no
    cloud issues. Neither moves the vehicle's sequence, nor re-issues anything."""
    revision, _ = restored.assign()
    restored.report("dsr_forged", 900, ReconcileStatus.REJECTED, ReasonCode.VERIFY_SIGNATURE_FAILED)
    restored.report(BEFORE_RESTORE, MAX_BELIEVED_SEQUENCE + 1)
    restored.report(BEFORE_RESTORE, 2**63 - 1)
    assert restored.latest()[:2] == (revision, 1)
    assert len(restored.assignments()) == 1
    assert restored.assign()[1] == 2


def test_a_rollout_member_reissued_is_still_counted_by_its_rollout(
    store_settings: Settings,
) -> None:
    plane = RolloutPlane(store_settings)
    try:
        body = reconcile_report(CANARY, "ahead", revision=BEFORE_RESTORE, sequence=5)
        asyncio.run(plane.cp.ingest.reconcile(body, f"vehicle:{CANARY}"))
        plane.cp.projector.catch_up()
        found = plane.cp.queries.desired_document(CANARY)
        assert found is not None and (found.revision, found.sequence) == (plane.canary, 6)
        row = plane.cp.queries.vehicle(CANARY)
        assert (row.rollout_id, row.desired_revision) == (ROLLOUT, plane.canary)
        took = reconcile_report(CANARY, "took", revision=plane.canary, sequence=6, minute=1)
        asyncio.run(plane.cp.ingest.reconcile(took, f"vehicle:{CANARY}"))
        assert plane.member() == ("converged", [])
    finally:
        plane.cp.close()
