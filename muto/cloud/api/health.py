"""Probes: GET /livez (the process answers), GET /readyz (it should get traffic, or for a
worker, it can act), and the older GET /healthz. Public, cheap, and bounded: a probe
that hangs on an unreachable database would itself look like a dead process."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select
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
# Prebuilt: the view store compiles a read once. On PostgreSQL the same round trip asks
# whether it takes writes: a standby after a failover, or a database set read-only,
# answers reads and refuses every write, so it must not get the traffic.
ANSWERS = select(1)
TAKES_WRITES = select(
    func.pg_is_in_recovery().label("recovering"),
    func.current_setting("transaction_read_only").label("read_only"),
)


async def livez(request: Request) -> Response:
    cp: ControlPlane = request.state.plane
    return ok({"status": "alive", "role": cp.settings.role})


async def readyz(request: Request) -> Response:
    cp: ControlPlane = request.state.plane
    leases: dict[str, Lease] = getattr(request.state, "leases", {})
    lag: int | None = None
    refuses: str | None = None
    try:
        lag, refuses = await asyncio.wait_for(asyncio.to_thread(_probe, cp), DATABASE_WAIT_S)
    except Exception:  # unreachable, or too slow to answer a probe: not ready either way
        lag = None
    failing = refuses or _failing(cp)
    if lag is None or refuses:
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


def _probe(cp: ControlPlane) -> tuple[int, str | None]:
    """The views' lag, and why the database refuses writes (None: it takes them)."""
    refuses = _refuses_writes(cp)  # first: the database answers at all
    return max(0, cp.log.position() - cp.projector.position()), refuses


def _refuses_writes(cp: ControlPlane) -> str | None:
    store = cp.views.store
    if not store.is_postgres:
        store.read(ANSWERS)  # the database answers
        return None
    [found] = store.read(TAKES_WRITES)
    if found.recovering:
        return "the database refuses writes: it is in recovery (a standby)"
    if found.read_only == "on":
        return "the database refuses writes: it is read-only"
    return None


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
