"""POST /reports/reconcile and /reports/health: idempotent by report id."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import body, operator_or_vehicle, plane
from muto.cloud.api.responses import ok
from muto.domain.reports import HealthReport, ReconcileReport


async def reconcile(request: Request) -> Response:
    report = await body(request, ReconcileReport)
    who = operator_or_vehicle(request, report.vehicle_id)
    written = await plane(request).ingest.reconcile(report, who.actor)
    return ok(
        {"reportId": report.report_id, "recorded": written.value},
        metadata={"position": written.position, "duplicate": not written.value},
    )


async def health(request: Request) -> Response:
    report = await body(request, HealthReport)
    who = operator_or_vehicle(request, report.vehicle_id)
    transition = await plane(request).ingest.health(report, who.actor)
    return ok({"reportId": report.report_id, "transition": transition})
