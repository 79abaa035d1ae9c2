"""Commands on a vehicle: registration, labels, and what it reports (reconcile results,
health, presence)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from muto.cloud.commands.cause import Cause
from muto.cloud.errors import Conflict, Invalid, NotFound
from muto.cloud.writer import Command, Touching, UnitOfWork
from muto.domain.broker import CLOUD_USER
from muto.domain.events import HealthSummary, StoredReconcile
from muto.domain.model.vehicle import Vehicle
from muto.domain.reports import HealthReport, ReconcileReport
from muto.domain.requests import VehiclePatch, VehicleRegistration


def registered_vehicle(uow: UnitOfWork, vehicle_id: str) -> Vehicle:
    vehicle = uow.find(Vehicle, Vehicle.create_id(vehicle_id))
    if vehicle is None:
        raise NotFound(f"vehicle {vehicle_id!r} is not registered")
    return vehicle


def registered_vehicles(uow: UnitOfWork, vehicle_ids: Sequence[str]) -> list[Vehicle]:
    """Every one of `vehicle_ids`, registered (else NotFound), looked for in one go: a
    rollout's assignment names thousands, each a load of its own after a restart."""
    uow.preload([Vehicle.create_id(v) for v in vehicle_ids])
    return [registered_vehicle(uow, v) for v in vehicle_ids]


def _expect_version(version: int | None, actual: int, what: str) -> None:
    if version is not None and version != actual:
        raise Conflict(
            f"{what} is at version {actual}, not {version}",
            {"expectedVersion": version, "actualVersion": actual},
        )


def register_vehicle(
    body: VehicleRegistration, cause: Cause, broker_users: Collection[str] = (CLOUD_USER,)
) -> Command[tuple[bool, int]]:
    """Returns (created, version). Re-registering identically is a no-op. An id among
    `broker_users` (Settings.broker_users) is refused: a vehicle logs in to the broker
    under its id, and would get the cloud's access to every vehicle's topics."""

    def command(uow: UnitOfWork) -> tuple[bool, int]:
        if body.vehicle_id in broker_users:
            raise Invalid(
                f"vehicle id {body.vehicle_id!r} is reserved: it is the control plane's "
                "MQTT broker user, and a vehicle logs in to the broker under its id "
                "(docs/mqtt.md)",
                {"path": "$.vehicleId"},
            )
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

    return Touching((Vehicle.create_id(body.vehicle_id),), command)


def register_vehicles(
    bodies: Sequence[VehicleRegistration],
    cause: Cause,
    broker_users: Collection[str] = (CLOUD_USER,),
) -> Command[list[tuple[bool, int]]]:
    """Many registrations as one command, so one atomic append (an import): each is
    `register_vehicle`'s own, so the events are those of registering one by one, and
    one refused registration refuses them all. The vehicles are looked for in one go
    (`UnitOfWork.preload`), not one query per vehicle."""
    commands = [register_vehicle(body, cause, broker_users) for body in bodies]

    def command(uow: UnitOfWork) -> list[tuple[bool, int]]:
        uow.preload([Vehicle.create_id(body.vehicle_id) for body in bodies])
        return [register(uow) for register in commands]

    return command


def update_vehicle(
    vehicle_id: str, patch: VehiclePatch, cause: Cause, expected_version: int | None = None
) -> Command[int]:
    def command(uow: UnitOfWork) -> int:
        vehicle = registered_vehicle(uow, vehicle_id)
        _expect_version(expected_version, vehicle.version, f"vehicle {vehicle_id!r}")
        vehicle.update(
            labels=dict(patch.labels),
            attributes=dict(patch.attributes),
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )
        return int(vehicle.version)

    return Touching((Vehicle.create_id(vehicle_id),), command)


def record_reconcile(report: ReconcileReport, actor: str) -> Command[bool]:
    """Returns False when the report id was already recorded (re-delivery)."""

    def command(uow: UnitOfWork) -> bool:
        vehicle = registered_vehicle(uow, report.vehicle_id)
        assignment = vehicle.assignment or {}
        correlation = (
            assignment.get("correlationId")
            if assignment.get("revision") == report.desired_state_revision
            else None
        ) or report.report_id
        stored = StoredReconcile.of(report)
        return bool(vehicle.record_reconcile(stored, actor=actor, correlation_id=correlation))

    return Touching((Vehicle.create_id(report.vehicle_id),), command)


def record_health(report: HealthReport, actor: str) -> Command[bool | None]:
    """True when the health status changed (a transition event was stored), False when
    it is the known one, None when the report is no news (Vehicle.record_health)."""

    def command(uow: UnitOfWork) -> bool | None:
        vehicle = registered_vehicle(uow, report.vehicle_id)
        summary = HealthSummary(
            report_id=report.report_id,
            reason_codes=[str(code) for code in report.reason_codes],
            observed_at=report.observed_at.isoformat(),
            journal=report.journal,
        )
        changed: bool | None = vehicle.record_health(
            str(report.status), summary, actor=actor, correlation_id=report.report_id
        )
        return changed

    return Touching((Vehicle.create_id(report.vehicle_id),), command)


def record_presence(vehicle_id: str, state: str, at: str | None, actor: str) -> Command[bool]:
    def command(uow: UnitOfWork) -> bool:
        vehicle = registered_vehicle(uow, vehicle_id)
        changed = vehicle.record_presence(
            state, at, actor=actor, correlation_id=f"presence-{vehicle_id}"
        )
        return bool(changed)

    return Touching((Vehicle.create_id(vehicle_id),), command)
