"""POST/GET/PATCH /vehicles."""

from __future__ import annotations

from msgspec.structs import replace
from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import (
    body,
    correlation,
    int_param,
    off_loop,
    operator,
    operator_or_vehicle,
    plane,
)
from muto.cloud.api.numbers import whole_number
from muto.cloud.api.responses import ok
from muto.cloud.api.schema import VehicleView
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, register_vehicle, update_vehicle
from muto.cloud.errors import Invalid
from muto.domain.requests import VehiclePatch, VehicleRegistration
from muto.domain.selectors import parse_selector

MAX_VERSION = 10**18 - 1  # spec/api.yaml: If-Match is "<1-18 digits>"


async def register(request: Request) -> Response:
    who = await operator(request)
    registration = await body(request, VehicleRegistration)
    cp = plane(request)
    cause = Cause.of(who.actor, correlation(request))
    written = await cp.write(register_vehicle(registration, cause, cp.settings.broker_users))
    cp.require_views(written)
    created, version = written.value
    return ok(
        await off_loop(cp.queries.vehicle, registration.vehicle_id),
        201 if created else 200,
        {"position": written.position, "version": version, "created": created},
    )


async def listing(request: Request) -> Response:
    await operator(request)
    raw = request.query_params.get("selector")
    selector = parse_selector(raw) if raw is not None else None
    limit = int_param(request, "limit", 100, 1, 1000)
    cp = plane(request)
    cursor = request.query_params.get("cursor")
    page = await off_loop(cp.queries.vehicles, selector, limit, cursor)
    return ok(
        await off_loop(with_reported, cp, page.items),
        metadata={"total": page.total, "limit": limit, "nextCursor": page.next_cursor},
    )


async def one(request: Request) -> Response:
    vehicle_id = request.path_params["vehicle_id"]
    await operator_or_vehicle(request, vehicle_id)
    cp = plane(request)
    return ok(await off_loop(reported_vehicle, cp, vehicle_id))


def reported_vehicle(cp: ControlPlane, vehicle_id: str) -> VehicleView:
    return with_reported(cp, [cp.queries.vehicle(vehicle_id)])[0]


def with_reported(cp: ControlPlane, vehicles: list[VehicleView]) -> list[VehicleView]:
    """Each vehicle with what it last said about itself over MQTT (None: nothing yet)."""
    said = cp.snapshots.reported([v.vehicle_id for v in vehicles])
    return [
        replace(v, reported=said[v.vehicle_id]) if v.vehicle_id in said else v for v in vehicles
    ]


async def patch(request: Request) -> Response:
    who = await operator(request)
    vehicle_id = request.path_params["vehicle_id"]
    changes = await body(request, VehiclePatch)
    cp = plane(request)
    expected = _if_match(request)
    cause = Cause.of(who.actor, correlation(request))
    written = await cp.write(update_vehicle(vehicle_id, changes, cause, expected))
    cp.require_views(written)
    return ok(
        await off_loop(cp.queries.vehicle, vehicle_id),
        metadata={"position": written.position, "version": written.value},
    )


def _if_match(request: Request) -> int | None:
    """`If-Match: "<version>"`: write only if the vehicle is still at that version."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    version = whole_number(raw.strip().strip('"'), 0, MAX_VERSION)
    if version is None:
        raise Invalid(
            'If-Match must be a vehicle version, "<1-18 digits>"', {"path": "header.If-Match"}
        )
    return version
