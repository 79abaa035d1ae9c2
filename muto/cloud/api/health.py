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
# Catch-up failing on every pass this long is not lag that will clear: the views are
# stuck (an event no view can take), whatever the lag says.
FAILING_S = 30.0
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
    failing = _failing(cp)
    if lag is None:
        status = "unavailable"
    else:
        status = "failing" if failing else "lagging" if lag >= MAX_LAG else "ready"
    body: dict[str, Any] = {
        "status": status,
        "failing": failing,
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
    failing = _failing(cp)
    ready = lag < MAX_LAG and failing is None
    body = {
        "status": "ready" if ready else "failing" if failing else "lagging",
        "position": position,
        "projectionLag": lag,
        "failing": failing,
        "mqttConnected": mqtt,
    }
    return ok(body, 200 if ready else 503)


def _failing(cp: ControlPlane) -> str | None:
    """Why the views are stuck: catch-up has failed on every pass for FAILING_S."""
    found = cp.projector.failing_for()
    if found is None or found[0] < FAILING_S:
        return None
    return f"projection catch-up failing for {found[0]:.0f} s: {found[1]}"[:500]
