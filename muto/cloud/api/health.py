"""Probes: GET /livez (the process answers), GET /readyz (it should get traffic, or for a
worker, it can act), and the older GET /healthz. Public, cheap, and bounded: a probe
that hangs on an unreachable database would itself look like a dead process."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import off_loop
from muto.cloud.api.responses import ok
from muto.cloud.bootstrap import ControlPlane
from muto.projections.locks import Lease

MAX_LAG = 10_000  # events the views may lack before a process is not ready
DATABASE_WAIT_S = 2.0
ANSWERS = select(1)  # prebuilt: the view store compiles a read once


async def livez(request: Request) -> Response:
    cp: ControlPlane = request.state.plane
    return ok({"status": "alive", "role": cp.settings.role})


async def readyz(request: Request) -> Response:
    cp: ControlPlane = request.state.plane
    leases: dict[str, Lease] = getattr(request.state, "leases", {})
    lag: int | None = None
    try:
        lag = await asyncio.wait_for(asyncio.to_thread(_lag, cp), DATABASE_WAIT_S)
    except Exception:  # unreachable, or too slow to answer a probe: not ready either way
        lag = None
    status = "unavailable" if lag is None else "lagging" if lag >= MAX_LAG else "ready"
    body: dict[str, Any] = {
        "status": status,
        "role": cp.settings.role,
        "database": lag is not None,
        "projectionLag": lag,
        "cachesLive": cp.caches.live(),
        "duties": {name: lease.holding for name, lease in sorted(leases.items())},
    }
    return ok(body, 200 if status == "ready" else 503)


def _lag(cp: ControlPlane) -> int:
    cp.views.store.read(ANSWERS)  # the database answers
    return max(0, cp.log.position() - cp.projector.position())


async def healthz(request: Request) -> Response:
    """Readiness: the database answers, the projections' lag, the MQTT link."""
    cp: ControlPlane = request.state.plane
    position = await off_loop(cp.log.position)
    lag = max(0, position - await off_loop(cp.projector.position))
    bridge = getattr(request.state, "bridge", None)
    mqtt = None if bridge is None else bridge.connected
    ready = lag < MAX_LAG
    body = {
        "status": "ready" if ready else "lagging",
        "position": position,
        "projectionLag": lag,
        "mqttConnected": mqtt,
    }
    return ok(body, 200 if ready else 503)
