"""Write side: each function returns a command for the Writer (see writer.py).

Commands check everything before they trigger the first event, so a refused command
leaves its aggregates untouched.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from muto.cloud.errors import Conflict, Invalid, NotFound
from muto.cloud.writer import Command, UnitOfWork
from muto.domain.compat import VehicleFacts, check_compatibility
from muto.domain.desired import (
    DesiredStateDocument,
    DesiredStateRequest,
    Envelope,
    RunNothing,
    StackRef,
)
from muto.domain.events import DesiredAssignment, HealthSummary, StoredReconcile, StoredRequest
from muto.domain.model.desired_state import DesiredState
from muto.domain.model.release import Release
from muto.domain.model.vehicle import Vehicle
from muto.domain.release import StackRelease, release_key
from muto.domain.reports import HealthReport, ReconcileReport
from muto.domain.requests import VehiclePatch, VehicleRegistration

SignDocument = Callable[[DesiredStateDocument], Envelope]


@dataclass(frozen=True)
class Cause:
    """Who asked (an operator token id, a vehicle id, `controller`) and the thread of
    intent it belongs to. Stored on every event."""

    actor: str
    correlation_id: str

    @classmethod
    def of(cls, actor: str, correlation_id: str | None = None) -> Cause:
        return cls(actor, correlation_id or str(uuid.uuid4()))


def new_revision() -> str:
    return f"dsr_{uuid.uuid4().hex[:20]}"


def _vehicle(uow: UnitOfWork, vehicle_id: str) -> Vehicle:
    vehicle = uow.find(Vehicle, Vehicle.create_id(vehicle_id))
    if vehicle is None:
        raise NotFound(f"vehicle {vehicle_id!r} is not registered")
    return vehicle


def _expect(version: int | None, actual: int, what: str) -> None:
    if version is not None and version != actual:
        raise Conflict(
            f"{what} is at version {actual}, not {version}",
            {"expectedVersion": version, "actualVersion": actual},
        )


# -- vehicles -------------------------------------------------------------------------


def register_vehicle(body: VehicleRegistration, cause: Cause) -> Command[tuple[bool, int]]:
    """Returns (created, version). Re-registering identically is a no-op."""

    def command(uow: UnitOfWork) -> tuple[bool, int]:
        existing = uow.find(Vehicle, Vehicle.create_id(body.vehicle_id))
        if existing is not None:
            if existing.labels == body.labels and existing.attributes == body.attributes:
                return False, existing.version
            raise Conflict(
                f"vehicle {body.vehicle_id!r} is already registered with other "
                "labels or attributes; PATCH it instead"
            )
        vehicle = Vehicle(
            vehicle_id=body.vehicle_id,
            labels=dict(body.labels),
            attributes=dict(body.attributes),
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )
        uow.add(vehicle)
        return True, vehicle.version

    return command


def register_vehicles(
    bodies: Sequence[VehicleRegistration], cause: Cause
) -> Command[list[tuple[bool, int]]]:
    """Many registrations as one command, so one atomic append (an import): each is
    `register_vehicle`'s own, so the events are those of registering one by one, and
    one refused registration refuses them all. Which vehicles are new is learnt in one
    query, not one per vehicle."""
    commands = [register_vehicle(body, cause) for body in bodies]

    def command(uow: UnitOfWork) -> list[tuple[bool, int]]:
        uow.prefetch([Vehicle.create_id(body.vehicle_id) for body in bodies])
        return [register(uow) for register in commands]

    return command


def update_vehicle(
    vehicle_id: str, patch: VehiclePatch, cause: Cause, expected_version: int | None = None
) -> Command[int]:
    def command(uow: UnitOfWork) -> int:
        vehicle = _vehicle(uow, vehicle_id)
        _expect(expected_version, vehicle.version, f"vehicle {vehicle_id!r}")
        vehicle.update(
            labels=dict(patch.labels),
            attributes=dict(patch.attributes),
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )
        return int(vehicle.version)

    return command


def record_reconcile(report: ReconcileReport, actor: str) -> Command[bool]:
    """Returns False when the report id was already recorded (re-delivery)."""

    def command(uow: UnitOfWork) -> bool:
        vehicle = _vehicle(uow, report.vehicle_id)
        assignment = vehicle.assignment or {}
        correlation = (
            assignment.get("correlationId")
            if assignment.get("revision") == report.desired_state_revision
            else None
        ) or report.report_id
        stored = StoredReconcile.of(report)
        return bool(vehicle.record_reconcile(stored, actor=actor, correlation_id=correlation))

    return command


def record_health(report: HealthReport, actor: str) -> Command[bool]:
    """Returns True when the health status changed (a transition event was stored)."""

    def command(uow: UnitOfWork) -> bool:
        vehicle = _vehicle(uow, report.vehicle_id)
        summary = HealthSummary(
            report_id=report.report_id,
            reason_codes=[str(code) for code in report.reason_codes],
            observed_at=report.observed_at.isoformat(),
        )
        changed = vehicle.record_health(
            str(report.status), summary, actor=actor, correlation_id=report.report_id
        )
        return bool(changed)

    return command


def record_presence(vehicle_id: str, state: str, at: str | None, actor: str) -> Command[bool]:
    def command(uow: UnitOfWork) -> bool:
        vehicle = _vehicle(uow, vehicle_id)
        changed = vehicle.record_presence(
            state, at, actor=actor, correlation_id=f"presence-{vehicle_id}"
        )
        return bool(changed)

    return command


# -- releases -------------------------------------------------------------------------


def register_release(
    release: StackRelease, digest: str, envelope: Envelope, cause: Cause
) -> Command[bool]:
    """Immutable: the same stack@version with the same digest is a no-op (False), with
    another digest a Conflict."""

    def command(uow: UnitOfWork) -> bool:
        existing = uow.find(Release, Release.create_id(release.key))
        if existing is not None:
            if existing.manifest_digest == digest:
                return False
            raise Conflict(
                f"release {release.key} is already registered with digest "
                f"{existing.manifest_digest}; releases are immutable",
                {"registeredDigest": existing.manifest_digest, "digest": digest},
            )
        uow.add(
            Release(
                key=release.key,
                manifest_digest=digest,
                manifest=release,
                envelope=envelope,
                actor=cause.actor,
                correlation_id=cause.correlation_id,
            )
        )
        return True

    return command


def load_release(uow: UnitOfWork, stack: str, version: str) -> Release:
    key = release_key(stack, version)
    release = uow.find(Release, Release.create_id(key))
    if release is None:
        raise NotFound(f"release {key} is not registered")
    return release


# -- desired state --------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """What one desired-state command assigned."""

    revision: str
    release_key: str | None  # None: a "run nothing" revision
    sequences: dict[str, int]


def incompatibilities(release: StackRelease, vehicles: Sequence[Vehicle]) -> list[dict[str, Any]]:
    found = []
    for vehicle in vehicles:
        facts = VehicleFacts(
            model=vehicle.labels.get("model"),
            os=vehicle.attributes.get("os"),
            ros_distro=vehicle.attributes.get("rosDistro"),
        )
        codes = check_compatibility(release, facts)
        if codes:
            found.append({"vehicleId": vehicle.vehicle_id, "reasonCodes": [str(c) for c in codes]})
    return found


def assign_desired_state(
    request: DesiredStateRequest,
    vehicle_ids: Sequence[str],
    cause: Cause,
    sign: SignDocument,
    *,
    rollout_id: str | None = None,
    phase: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    revision: str | None = None,
) -> Command[Assignment]:
    """One revision, assigned to each vehicle with its next sequence, in one transaction.
    Refused whole (nothing assigned) if the release is missing, the manifest digest was
    given and differs, or any vehicle is unknown or incompatible."""
    revision = revision or new_revision()

    def command(uow: UnitOfWork) -> Assignment:
        if not vehicle_ids:
            raise Invalid("the target selects no vehicles", {"selector": request.target.selector})
        stored = _requested_release(uow, request)
        vehicles = _compatible_vehicles(uow, stored, vehicle_ids)
        manifest = stored.manifest
        stack = StackRef(
            name=manifest.stack_name,
            version=manifest.version,
            manifest_digest=stored.manifest_digest,
        )
        issue = _Issue.now(revision, stack, stored.key, request, rollout_id, phase, cause, now)
        sequences = {vehicle.vehicle_id: issue.to(vehicle, sign) for vehicle in vehicles}
        uow.add(issue.recorded(vehicle_ids))
        return Assignment(revision, stored.key, sequences)

    return command


def assign_run_nothing(
    request: RunNothing,
    vehicle_ids: Sequence[str],
    cause: Cause,
    sign: SignDocument,
    *,
    rollout_id: str,
    phase: str,
    now: Callable[[], datetime],
) -> Command[Assignment]:
    """One revision that says "run nothing" (a document with no stack, served with no
    release): a rollout's rollback of vehicles that had no release before it."""
    revision = new_revision()

    def command(uow: UnitOfWork) -> Assignment:
        vehicles = [_vehicle(uow, v) for v in vehicle_ids]
        issue = _Issue.now(revision, None, None, request, rollout_id, phase, cause, now)
        sequences = {vehicle.vehicle_id: issue.to(vehicle, sign) for vehicle in vehicles}
        uow.add(issue.recorded(vehicle_ids))
        return Assignment(revision, None, sequences)

    return command


def _requested_release(uow: UnitOfWork, request: DesiredStateRequest) -> Release:
    """The registered release the request names, with the digest it gives (if any)."""
    stored = load_release(uow, request.stack.name, request.stack.version)
    wanted = request.stack.manifest_digest
    if wanted is not None and wanted != stored.manifest_digest:
        raise Conflict(f"release {stored.key} has digest {stored.manifest_digest}, not {wanted}")
    return stored


def _compatible_vehicles(
    uow: UnitOfWork, stored: Release, vehicle_ids: Sequence[str]
) -> list[Vehicle]:
    """Every targeted vehicle, registered and compatible with the release; else refused."""
    vehicles = [_vehicle(uow, v) for v in vehicle_ids]
    incompatible = incompatibilities(stored.manifest, vehicles)
    if incompatible:
        raise Invalid(
            f"release {stored.key} is incompatible with {len(incompatible)} targeted vehicle(s)",
            incompatible,
        )
    return vehicles


@dataclass(frozen=True)
class _Issue:
    """One revision's terms, signed into a document for each vehicle in turn.
    `stack` None: the revision says "run nothing"."""

    revision: str
    stack: StackRef | None
    release_key: str | None
    request: DesiredStateRequest | RunNothing
    rollout_id: str | None
    phase: str | None
    cause: Cause
    issued: datetime
    expires: datetime

    @classmethod
    def now(
        cls,
        revision: str,
        stack: StackRef | None,
        release_key: str | None,
        request: DesiredStateRequest | RunNothing,
        rollout_id: str | None,
        phase: str | None,
        cause: Cause,
        clock: Callable[[], datetime],
    ) -> _Issue:
        issued = clock()
        expires = issued + timedelta(seconds=request.ttl_sec)
        return cls(revision, stack, release_key, request, rollout_id, phase, cause, issued, expires)

    def recorded(self, vehicle_ids: Sequence[str]) -> DesiredState:
        return DesiredState(
            revision=self.revision,
            request=StoredRequest.of(self.request),
            release_key=self.release_key,
            manifest_digest=self.stack.manifest_digest if self.stack else None,
            vehicle_ids=list(vehicle_ids),
            rollout_id=self.rollout_id,
            actor=self.cause.actor,
            correlation_id=self.cause.correlation_id,
        )

    def to(self, vehicle: Vehicle, sign: SignDocument) -> int:
        """Sign the vehicle's document and assign it; returns its new sequence."""
        sequence = vehicle.sequence + 1
        document = DesiredStateDocument(
            vehicle_id=vehicle.vehicle_id,
            revision=self.revision,
            sequence=sequence,
            stack=self.stack,
            policy=self.request.policy,
            agent_config=self.request.agent_config,
            rollout_id=self.rollout_id,
            correlation_id=self.cause.correlation_id,
            issued_at=self.issued,
            expires_at=self.expires,
        )
        envelope = sign(document)
        assignment = DesiredAssignment(
            revision=self.revision,
            release_key=self.release_key,
            manifest_digest=self.stack.manifest_digest if self.stack else None,
            rollout_id=self.rollout_id,
            phase=self.phase,
            correlation_id=self.cause.correlation_id,
            envelope=envelope,
            document_digest=payload_digest(envelope),
            issued_at=self.issued.isoformat(),
            expires_at=self.expires.isoformat(),
        )
        return vehicle.assign(
            assignment, actor=self.cause.actor, correlation_id=self.cause.correlation_id
        )


def payload_digest(envelope: Envelope) -> str:
    return "sha256:" + hashlib.sha256(base64.b64decode(envelope.payload)).hexdigest()
