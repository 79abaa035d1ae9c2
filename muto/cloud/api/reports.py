"""POST /reports/reconcile and /reports/health: idempotent by report id."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import acting_on, body, plane, principal
from muto.cloud.api.responses import ok
from muto.cloud.writer import Written
from muto.domain.reports import HealthReport, ReconcileReport


async def reconcile(request: Request) -> Response:
    caller = await principal(request)  # before reading the body: strangers learn nothing
    report = await body(request, ReconcileReport)
    who = acting_on(caller, report.vehicle_id)
    written = await plane(request).ingest.reconcile(report, who.actor)
    return recorded(report, written)


def recorded(report: ReconcileReport, written: Written[bool]) -> Response:
    """The answer to a stored (or duplicate) reconcile report."""
    return ok(
        {"reportId": report.report_id, "recorded": written.value},
        metadata={"position": written.position, "duplicate": not written.value},
    )


async def health(request: Request) -> Response:
    caller = await principal(request)
    report = await body(request, HealthReport)
    who = acting_on(caller, report.vehicle_id)
    transition = await plane(request).ingest.health(report, who.actor)
    return health_answer(report, transition)


def health_answer(report: HealthReport, transition: bool) -> Response:
    return ok({"reportId": report.report_id, "transition": transition})
