"""POST /vehicles/{id}/refresh: ask a vehicle, over MQTT, to re-publish its snapshots
(the read-only `cmd/refresh`), wait for its answer with the same request id, and return
it with the vehicle as the inventory now shows it."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import off_loop, operator, plane
from muto.cloud.api.responses import ok
from muto.cloud.api.vehicles import reported_vehicle
from muto.cloud.errors import AppError
from muto.cloud.settings import Settings
from muto.domain.messages import RefreshResult

WAIT_S = 10.0


class Refresher(Protocol):
    """The MQTT bridge, as this endpoint needs it (muto/cloud/mqtt/bridge.py)."""

    async def refresh(self, vehicle_id: str, timeout_s: float) -> RefreshResult | None: ...


class NoLink(AppError):
    status = 503
    code = "unavailable"


class NoAnswer(AppError):
    status = 504
    code = "no_answer"


def _no_bridge(settings: Settings) -> str:
    """Why this process has no bridge: an `api` process never runs one (the workers do,
    docs/deploy.md), whatever its MQTT settings; otherwise it was started without MQTT."""
    if not settings.does_duties:
        return (
            "this API process (--role api) runs no MQTT bridge (the workers do): "
            "it cannot reach vehicles"
        )
    return "this control plane runs without MQTT (--no-mqtt): it cannot reach vehicles"


async def refresh(request: Request) -> Response:
    await operator(request)
    vehicle_id = request.path_params["vehicle_id"]
    cp = plane(request)
    await off_loop(cp.queries.vehicle, vehicle_id)  # 404 for an unknown vehicle, before sending
    bridge: Refresher | None = getattr(request.state, "bridge", None)
    if bridge is None:
        raise NoLink(_no_bridge(cp.settings))
    try:
        result = await bridge.refresh(vehicle_id, WAIT_S)
    except ConnectionError as exc:
        raise NoLink(f"{exc}; retry once the broker is back") from None
    if result is None:
        raise NoAnswer(
            f"vehicle {vehicle_id!r} did not answer the refresh within {WAIT_S:.0f} s "
            "(is it online? see its presence)",
            {"waitedS": WAIT_S},
        )
    return ok(
        {
            "requestId": result.request_id,
            "ok": result.ok,
            "snapshotsUpdated": result.snapshots_updated,
            "vehicle": await off_loop(reported_vehicle, cp, vehicle_id),
        }
    )
