"""Assigning desired state: one revision, signed into a document per vehicle, in one
transaction; refused whole if any vehicle cannot take it."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from muto.cloud.commands.cause import Cause
from muto.cloud.commands.releases import load_release
from muto.cloud.commands.vehicles import registered_vehicle, registered_vehicles
from muto.cloud.errors import Conflict, Invalid
from muto.cloud.writer import Command, Touching, UnitOfWork
from muto.domain.compat import VehicleFacts, check_compatibility
from muto.domain.desired import (
    DesiredStateDocument,
    DesiredStateRequest,
    Envelope,
    RunNothing,
    StackRef,
)
from muto.domain.events import DesiredAssignment, StoredRequest
from muto.domain.model.desired_state import DesiredState
from muto.domain.model.release import Release
from muto.domain.model.rollout import Rollout
from muto.domain.model.vehicle import Vehicle
from muto.domain.release import StackRelease
from muto.domain.wire import convert, decode
from muto.trust.dsse import digest

SignDocument = Callable[[DesiredStateDocument], Envelope]


def new_revision() -> str:
    return f"dsr_{uuid.uuid4().hex[:20]}"


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
    active_rollouts: Sequence[str] = (),
) -> Command[Assignment]:
    """One revision, assigned to each vehicle with its next sequence, in one transaction.
    Refused whole (nothing assigned) if the release is missing, the manifest digest was
    given and differs, or any vehicle is unknown or incompatible. A direct assignment
    (no `rollout_id`) is refused (Conflict) if any vehicle is a member of a rollout that
    is not final (`refuse_rollout_members`); `active_rollouts` names rollouts the views
    saw targeting them (those the vehicles' own desired states name are checked too)."""
    revision = revision or new_revision()

    def command(uow: UnitOfWork) -> Assignment:
        if not vehicle_ids:
            raise Invalid("the target selects no vehicles", {"selector": request.target.selector})
        stored = _requested_release(uow, request)
        vehicles = _compatible_vehicles(uow, stored, vehicle_ids)
        if rollout_id is None:
            refuse_rollout_members(uow, vehicles, active_rollouts)
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
        vehicles = registered_vehicles(uow, vehicle_ids)
        issue = _Issue.now(revision, None, None, request, rollout_id, phase, cause, now)
        sequences = {vehicle.vehicle_id: issue.to(vehicle, sign) for vehicle in vehicles}
        uow.add(issue.recorded(vehicle_ids))
        return Assignment(revision, None, sequences)

    return command


def refuse_rollout_members(
    uow: UnitOfWork, vehicles: Sequence[Vehicle], hinted: Sequence[str] = ()
) -> None:
    """Conflict naming each vehicle and its rollout if any of `vehicles` is a member
    (neither left nor superseded) of a rollout that is not final: the rollout would
    assign over a direct assignment or judge the vehicle on a release it no longer
    runs. Decided on the rollout aggregates themselves, inside the write: each one read
    here is checked at the save against what other processes stored since (the
    writer's optimistic concurrency), so a wave assigned meanwhile by the controller of
    another process makes this command run again on fresh state. The rollouts checked:
    those `hinted` (the views' answer) and those the vehicles' desired states name."""
    candidates = dict.fromkeys(hinted)
    for vehicle in vehicles:
        named = (vehicle.assignment or {}).get("rolloutId")
        if named:
            candidates[named] = None
    busy: list[dict[str, Any]] = []
    for rollout_id in candidates:
        rollout = uow.find(Rollout, Rollout.create_id(rollout_id))
        if rollout is None or rollout.is_final:
            continue
        members = rollout.members()
        busy.extend(
            {"vehicleId": v.vehicle_id, "rolloutId": rollout_id, "rolloutState": rollout.state}
            for v in vehicles
            if v.vehicle_id in members
        )
    if busy:
        rollouts = sorted({b["rolloutId"] for b in busy})
        raise Conflict(
            f"{len(busy)} targeted vehicle(s) are members of active rollout(s) "
            f"{', '.join(rollouts)}: a direct assignment would fight the rollout. Let it "
            "finish, or pause it (POST /rollouts/{id}/pause) and roll it back "
            "(POST /rollouts/{id}/rollback) first; or exclude those vehicles",
            sorted(busy, key=lambda b: (b["vehicleId"], b["rolloutId"])),
        )


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
    vehicles = registered_vehicles(uow, vehicle_ids)
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
        document = DesiredStateDocument(
            vehicle_id=vehicle.vehicle_id,
            revision=self.revision,
            sequence=vehicle.next_sequence(),
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
    """The digest of the signed document (the envelope was signed here: no checks)."""
    return digest(base64.b64decode(envelope.payload))


# A vehicle's refusal of its desired state as expired is believed once the document
# has less than this share of its lifetime left by the cloud's clock: a vehicle whose
# own clock runs far ahead does not get a new document every report.
RENEW_WITHIN = 0.1
# The actors of a document signed again by the cloud itself, in the audit trail.
RENEWAL_ACTOR = "cloud:renewal"  # refused as expired (renew_desired_state)
REISSUE_ACTOR = "cloud:reissue"  # the vehicle was ahead (reissue_desired_state)


def renew_desired_state(
    vehicle_id: str, revision: str, sign: SignDocument, now: Callable[[], datetime]
) -> Command[int | None]:
    """Re-sign the vehicle's current desired state, `revision`, for a fresh lifetime
    under its next sequence: the same revision, release, policy and rollout, so the
    rollout still counts the vehicle's reports on it. For a vehicle that refused it as
    expired (away longer than its lifetime, e.g. during a fleet rollback): nothing else
    ever gives it a document it will accept, and an expired one it must refuse (a
    withheld update looks the same to it). Returns the new sequence, or None when
    `revision` is no longer the vehicle's or is not near its end by the cloud's clock."""

    def command(uow: UnitOfWork) -> int | None:
        vehicle = registered_vehicle(uow, vehicle_id)
        if vehicle.assignment is None or vehicle.assignment.get("revision") != revision:
            return None
        current = convert(vehicle.assignment, DesiredAssignment)
        issued = datetime.fromisoformat(current.issued_at)
        expires = datetime.fromisoformat(current.expires_at)
        at = now()
        if expires - at > (expires - issued) * RENEW_WITHIN:
            return None
        return _signed_again(vehicle, sign, at, RENEWAL_ACTOR)

    return command


@dataclass(frozen=True)
class Reissued:
    """A vehicle's desired state issued again because the vehicle was ahead."""

    vehicle_id: str
    revision: str
    reported: int  # the highest sequence the vehicle said it took
    issued: int  # the highest this cloud had issued it
    sequence: int  # the document's now


def reissue_desired_state(
    vehicle_id: str, sign: SignDocument, now: Callable[[], datetime]
) -> Command[Reissued | None]:
    """Re-sign the vehicle's current desired state under its next sequence, for a fresh
    lifetime, when the vehicle reported taking a later sequence than this cloud issued
    it (`Vehicle.ahead`): a cloud restored from a backup, whose documents the vehicle
    refuses as STALE_REVISION until its sequences pass the vehicle's. The same revision,
    release, policy and rollout, as a renewal's, so the vehicle takes the restored
    cloud's intent and a rollout still counts its reports on it. Once: after it this
    cloud is ahead. None when the vehicle is not ahead, or has no desired state here
    (its next assignment takes a sequence above the one it reported all the same)."""

    def command(uow: UnitOfWork) -> Reissued | None:
        vehicle = registered_vehicle(uow, vehicle_id)
        if not vehicle.ahead() or vehicle.assignment is None:
            return None
        reported, issued = vehicle.reported(), vehicle.sequence
        sequence = _signed_again(vehicle, sign, now(), REISSUE_ACTOR)
        return Reissued(vehicle_id, vehicle.assignment["revision"], reported, issued, sequence)

    return Touching((Vehicle.create_id(vehicle_id),), command)


def _signed_again(vehicle: Vehicle, sign: SignDocument, at: datetime, actor: str) -> int:
    """The vehicle's current desired state signed again under its next sequence, for
    the lifetime it was given, from `at`, and assigned by `actor`; returns the sequence."""
    current = convert(vehicle.assignment, DesiredAssignment)
    issued = datetime.fromisoformat(current.issued_at)
    expires = datetime.fromisoformat(current.expires_at)
    signed = decode(base64.b64decode(current.envelope.payload), DesiredStateDocument)
    document = msgspec.structs.replace(
        signed,
        sequence=vehicle.next_sequence(),
        issued_at=at,
        expires_at=at + (expires - issued),
    )
    envelope = sign(document)
    again = msgspec.structs.replace(
        current,
        envelope=envelope,
        document_digest=payload_digest(envelope),
        issued_at=document.issued_at.isoformat(),
        expires_at=document.expires_at.isoformat(),
    )
    return vehicle.assign(again, actor=actor, correlation_id=current.correlation_id)
