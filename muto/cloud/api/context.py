"""Per-request access to the control plane and the caller's identity."""

from __future__ import annotations

import re
from typing import TypeVar

from starlette.requests import Request

from muto.cloud.api.numbers import whole_number
from muto.cloud.api.responses import Unauthorized, read_body
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.errors import Forbidden, Invalid
from muto.cloud.tokens import Principal, Role
from muto.domain.wire import REFERENCE_PATTERN, decode

T = TypeVar("T")
REFERENCE = re.compile(REFERENCE_PATTERN)
OPEN = Principal("open", Role.OPERATOR, None)  # when auth is switched off (local dev)


def plane(request: Request) -> ControlPlane:
    cp: ControlPlane = request.state.plane
    return cp


def principal(request: Request) -> Principal:
    cp = plane(request)
    if not cp.settings.auth:
        return OPEN
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("a bearer token is required")
    found = cp.auth.authenticate(secret.strip())
    if found is None:
        raise Unauthorized("unknown or revoked token")
    return found


def operator(request: Request) -> Principal:
    who = principal(request)
    if who.role is not Role.OPERATOR:
        raise Forbidden("this endpoint needs an operator token")
    return who


def operator_or_vehicle(request: Request, vehicle_id: str) -> Principal:
    """Operators may act on any vehicle; a vehicle token only on its own vehicle."""
    return acting_on(principal(request), vehicle_id)


def acting_on(who: Principal, vehicle_id: str) -> Principal:
    if who.role is Role.VEHICLE and who.vehicle_id != vehicle_id:
        raise Forbidden(f"this token is bound to vehicle {who.vehicle_id!r}, not {vehicle_id!r}")
    return who


async def body(request: Request, kind: type[T]) -> T:
    return decode(await read_body(request, plane(request).settings.max_body_bytes), kind)


def correlation(request: Request) -> str | None:
    """The X-Correlation-Id header, held to the same rule as the bodies' correlationId:
    it ends up in an indexed column of the audit view."""
    raw = request.headers.get("x-correlation-id")
    if raw is not None and not REFERENCE.match(raw):
        raise Invalid(
            "X-Correlation-Id must be 1-128 printable ASCII characters without spaces",
            {"path": "header.X-Correlation-Id"},
        )
    return raw


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = whole_number(raw, low, high)
    if value is None:
        raise Invalid(
            f"query parameter {name!r} must be an integer in [{low}, {high}]",
            {"path": f"query.{name}"},
        )
    return value
