"""The Starlette application: an explicit route table, the control plane in lifespan
state, one structured log line per request."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muto.cloud.api import (
    artifacts,
    audit,
    desired,
    health,
    refresh,
    releases,
    reports,
    rollouts,
    tokens,
    vehicles,
)
from muto.cloud.api.responses import error, exception_handlers
from muto.cloud.artifacts.store import ArtifactStore, DirectoryArtifacts, MemoryArtifacts
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.dashboard import mount as dashboard
from muto.cloud.metrics import CloudMetrics, RequestMetrics, route_templates, scrape
from muto.cloud.settings import Settings
from muto.projections.locks import Lease, Lock

SPEC = Path(__file__).resolve().parents[3] / "spec" / "api.yaml"
access_log = logging.getLogger("muto.access")


async def openapi(_: Request) -> Response:
    return Response(SPEC.read_bytes(), media_type="application/yaml")


# Every role serves these (a worker serves nothing else).
PROBES = [
    Route("/livez", health.livez, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/healthz", health.healthz, methods=["GET"]),
]
WORKER = [*PROBES, Route("/metrics", scrape, methods=["GET"])]
ROUTES = [
    *PROBES,
    Route("/openapi.yaml", openapi, methods=["GET"]),
    Route("/vehicles", vehicles.register, methods=["POST"]),
    Route("/vehicles", vehicles.listing, methods=["GET"]),
    Route("/vehicles/{vehicle_id}", vehicles.one, methods=["GET"]),
    Route("/vehicles/{vehicle_id}", vehicles.patch, methods=["PATCH"]),
    Route("/vehicles/{vehicle_id}/refresh", refresh.refresh, methods=["POST"]),
    Route("/releases", releases.register, methods=["POST"]),
    Route("/releases", releases.listing, methods=["GET"]),
    Route("/releases/{stack}/{version}", releases.one, methods=["GET"]),
    Route("/desired-states", desired.create, methods=["POST"]),
    Route("/desired-states/latest", desired.latest, methods=["GET"]),
    Route("/reports/reconcile", reports.reconcile, methods=["POST"]),
    Route("/reports/health", reports.health, methods=["POST"]),
    Route("/rollouts", rollouts.create, methods=["POST"]),
    Route("/rollouts", rollouts.listing, methods=["GET"]),
    Route("/rollouts/{rollout_id}", rollouts.one, methods=["GET"]),
    Route("/rollouts/{rollout_id}/pause", rollouts.pause_rollout, methods=["POST"]),
    Route("/rollouts/{rollout_id}/resume", rollouts.resume_rollout, methods=["POST"]),
    Route("/rollouts/{rollout_id}/rollback", rollouts.rollback_rollout, methods=["POST"]),
    Route("/tokens", tokens.issue, methods=["POST"]),
    Route("/tokens/{token_id}/revoke", tokens.revoke, methods=["POST"]),
    Route("/audit", audit.timeline, methods=["GET"]),
    Route("/metrics", scrape, methods=["GET"]),
    Route("/artifacts/{digest}", artifacts.upload, methods=["PUT"]),
    Route("/artifacts/{digest}", artifacts.download, methods=["GET", "HEAD"]),
]


def resources(routes: Sequence[Route]) -> list[Route]:
    """One Starlette route per path, whatever the number of entries in the table: with
    one route per method, a request with another method matched only the first entry,
    and its 405 listed that entry's methods in `Allow`, not the path's."""
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for route in routes:
        for method in route.methods or ():
            by_path.setdefault(route.path, {})[method] = route.endpoint
    return [Route(path, _by_method(table), methods=list(table)) for path, table in by_path.items()]


def _by_method(
    table: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    if len(set(table.values())) == 1:
        return next(iter(table.values()))

    async def endpoint(request: Request) -> Response:
        return await table[request.method](request)

    return endpoint


class RefuseNul:
    """PostgreSQL can neither store nor compare text with a NUL in it, so a NUL in the
    path or the query string was a 500 there. No identifier holds one: a NUL in the
    path is an unknown resource (404), in the query an invalid parameter (422)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if "\x00" in scope["path"]:
                await error(404, "not_found", "no resource has a NUL in its path")(
                    scope, receive, send
                )
                return
            if b"%00" in scope["query_string"]:
                await error(422, "invalid", "a query parameter holds a NUL", {"path": "query"})(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


class AccessLog:
    """One JSON line per request: method, path, status, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            access_log.info(
                json.dumps(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 2),
                    }
                )
            )


Extension = Callable[[ControlPlane], Awaitable[dict[str, Any]]]


def create_app(
    settings: Settings,
    plane: ControlPlane | None = None,
    extensions: Sequence[Callable[[ControlPlane], Any]] = (),
) -> Starlette:
    """`plane` lets a test or an embedding process share one control plane; otherwise
    the app opens (and closes) its own from `settings`. Each extension is an async
    context manager factory (e.g. the MQTT bridge) given the control plane; what it
    yields is merged into the request state, and the duties it holds (`leases`, name ->
    Lease) into the state's `leases`, which /readyz reports.

    `settings.role`: `api` and `all` serve the API; `worker` only the probes and metrics. The
    projector follows the log where the process does duties (under the projector lease:
    one process of a deployment); an `api` process projects only on demand, its own
    writes (read-your-writes)."""

    metrics = CloudMetrics()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        cp = plane or ControlPlane.open(settings)
        cp.listen_for_changes()
        leases: dict[str, Lease] = {}
        if settings.does_duties:
            leases["projector"] = Lease(cp.views.store.engine, Lock.PROJECTOR)
            cp.projector.start(follow=leases["projector"].held)
        else:
            cp.projector.start(follow=None)
        state: dict[str, Any] = {
            "plane": cp,
            "metrics": metrics,
            "artifacts": artifact_store(settings),
        }
        try:
            async with _extensions(cp, extensions) as extra:
                leases.update(extra.pop("leases", {}))
                state.update(extra, leases=leases)
                detach = metrics.attach(cp, state.get("bridge"), state.get("controller"))
                try:
                    yield state
                finally:
                    detach()
        finally:
            cp.projector.stop()
            for lease in leases.values():
                lease.release()
            if plane is None:
                cp.close()

    # A worker answers its probes and its metrics; the API and the dashboard are the
    # api role's.
    routes = [*resources(ROUTES), dashboard()] if settings.serves_api else resources(WORKER)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers())
    app.add_middleware(RefuseNul)
    app.add_middleware(AccessLog)
    app.add_middleware(RequestMetrics, metrics=metrics, templates=route_templates(routes))
    return app


def artifact_store(settings: Settings) -> ArtifactStore:
    if settings.is_memory and settings.artifact_dir is None:
        return MemoryArtifacts()
    return DirectoryArtifacts(settings.artifact_dir or settings.data_dir / "artifacts")


@asynccontextmanager
async def _extensions(
    cp: ControlPlane, factories: Sequence[Callable[[ControlPlane], Any]]
) -> AsyncIterator[dict[str, Any]]:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        merged: dict[str, Any] = {"leases": {}}
        for factory in factories:
            found = dict(await stack.enter_async_context(factory(cp)))
            merged["leases"].update(found.pop("leases", {}))
            merged.update(found)
        yield merged
