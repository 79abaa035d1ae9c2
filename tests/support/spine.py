"""Builders for tests of the control plane's spine (event log, writer, views).

A fleet of registered vehicles, reports, the settings of each storage
backend, and every view table's rows for comparisons. Plain data in, plain data out:
nothing here is a fake; every helper goes through the real commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, register_vehicle
from muto.cloud.settings import MEMORY, Settings
from muto.domain.desired import DesiredStateRequest, Envelope, StackRef, Target
from muto.domain.events import DesiredAssignment
from muto.domain.reasons import ReasonCode
from muto.domain.report_order import ReportPlace
from muto.domain.reports import HealthReport, HealthStatus, ReconcileReport, ReconcileStatus
from muto.domain.requests import VehicleRegistration
from muto.projections import Views
from muto.projections.store import rows

if TYPE_CHECKING:
    from tests.support.releases import SignedRelease

OPERATOR = "operator:test"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # reports' observedAt: deterministic rows


def cause(correlation_id: str | None = None) -> Cause:
    return Cause.of(OPERATOR, correlation_id)


# -- backends -----------------------------------------------------------------------------


def unsigned_assignment(revision: str, correlation_id: str) -> DesiredAssignment:
    """A desired state as an aggregate stores it, signed by nobody (the aggregates' own
    rules never open the envelope)."""
    return DesiredAssignment(
        revision=revision,
        release_key="core@1.0.0",
        manifest_digest="sha256:" + "1" * 64,
        correlation_id=correlation_id,
        envelope=Envelope(payload_type="application/json", payload="", signatures=[]),
        document_digest="sha256:" + "2" * 64,
        issued_at="2026-01-01T00:00:00+00:00",
        expires_at="2026-02-01T00:00:00+00:00",
    )


def memory_settings(data_dir: Path) -> Settings:
    return Settings(database_url=MEMORY, data_dir=data_dir, mqtt_url=None)


def sqlite_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, mqtt_url=None)


def postgres_settings(postgres_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=postgres_url, data_dir=data_dir, mqtt_url=None)


# -- assignments --------------------------------------------------------------------------


def desired_request(selector: str, release: SignedRelease) -> DesiredStateRequest:
    return DesiredStateRequest(target=Target(selector=selector), stack=release.ref)


# -- vehicles -----------------------------------------------------------------------------


def registration(
    vehicle_id: str,
    *,
    model: str = "m3",
    region: str = "eu",
    os: str = "ubuntu-22.04",
    ros_distro: str = "humble",
    **labels: str,
) -> VehicleRegistration:
    return VehicleRegistration(
        vehicle_id=vehicle_id,
        labels={"model": model, "region": region, **labels},
        attributes={"os": os, "rosDistro": ros_distro},
    )


def fleet(
    count: int,
    *,
    prefix: str = "v",
    models: Sequence[str] = ("m3",),
    regions: Sequence[str] = ("eu",),
) -> list[VehicleRegistration]:
    """`count` registrations `{prefix}0000`..., cycling models, then regions."""
    return [
        registration(
            f"{prefix}{i:04d}",
            model=models[i % len(models)],
            region=regions[(i // len(models)) % len(regions)],
        )
        for i in range(count)
    ]


def register_fleet(cp: ControlPlane, registrations: Iterable[VehicleRegistration]) -> list[str]:
    """Register every vehicle (submitted together: group commit), wait until the views
    show them, and return their ids."""
    by = cause()
    futures = [(r.vehicle_id, cp.writer.submit(register_vehicle(r, by))) for r in registrations]
    positions = [f.result().position for _, f in futures]
    cp.projector.catch_up_to(max((p for p in positions if p is not None), default=None))
    return [vehicle_id for vehicle_id, _ in futures]


# -- reports ------------------------------------------------------------------------------


def reconcile_report(
    vehicle_id: str,
    report_id: str,
    status: ReconcileStatus = ReconcileStatus.CONVERGED,
    *,
    revision: str | None = None,
    reason_codes: Sequence[ReasonCode] = (),
    running: StackRef | None = None,
    minute: int = 0,
    sequence: int | None = None,
    journal: ReportPlace | None = None,
) -> ReconcileReport:
    return ReconcileReport(
        schema="muto.reconcile-report.v1",
        report_id=report_id,
        vehicle_id=vehicle_id,
        desired_state_revision=revision,
        sequence=sequence,
        status=status,
        reason_codes=list(reason_codes),
        running=running,
        observed_at=EPOCH + timedelta(minutes=minute),
        journal=journal,
    )


def health_report(
    vehicle_id: str,
    report_id: str,
    status: HealthStatus,
    reason_codes: Sequence[ReasonCode] = (),
) -> HealthReport:
    """Any status but healthy says why: STACK_NOT_RUNNING unless `reason_codes` given."""
    if status != HealthStatus.HEALTHY and not reason_codes:
        reason_codes = [ReasonCode.STACK_NOT_RUNNING]
    return HealthReport(
        schema="muto.health-report.v1",
        report_id=report_id,
        vehicle_id=vehicle_id,
        status=status,
        reason_codes=list(reason_codes),
        observed_at=EPOCH,
    )


# -- views --------------------------------------------------------------------------------


def table_rows(views: Views, table: Table) -> list[dict[str, Any]]:
    """Every row of one view table, ordered by primary key."""
    key = [c.name for c in table.primary_key.columns]
    with views.store.reading() as session:
        found = rows(session.execute(table.select()))
    return sorted(found, key=lambda row: [str(row[k]) for k in key])


def view_rows(views: Views) -> dict[str, list[dict[str, Any]]]:
    """Every row of every view table, by table name: equal dumps, equal read models."""
    return {
        table.name: table_rows(views, table)
        for projection in views.all
        for table in projection.tables
    }
