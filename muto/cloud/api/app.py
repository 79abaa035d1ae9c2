"""The Starlette application: an explicit route table, the control plane in lifespan
state, one structured log line per request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

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
    trust,
    vehicles,
)
from muto.cloud.api.edge import Edge
from muto.cloud.api.fast import FastLane
from muto.cloud.api.responses import exception_handlers
from muto.cloud.artifacts.store import ArtifactStore, DirectoryArtifacts, MemoryArtifacts
from muto.cloud.bootstrap import ControlPlane, Extension, serving
from muto.cloud.dashboard import mount as dashboard
from muto.cloud.metrics import CloudMetrics, route_templates, scrape
from muto.cloud.settings import Settings

SPEC = Path(__file__).resolve().parents[3] / "spec" / "api.yaml"


async def openapi(_: Request) -> Response:
    return Response(SPEC.read_bytes(), media_type="application/yaml")


# Every role serves these (a worker serves nothing else).
PROBES = [
    Route("/livez", health.livez, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/healthz", health.healthz, methods=["GET"]),
]
WORKER = [*PROBES, Route("/metrics", scrape, methods=["GET"])]
# The fleet's steady traffic first: the router tries the paths in this order.
ROUTES = [
    Route("/desired-states/latest", desired.latest, methods=["GET"]),
    Route("/reports/reconcile", reports.reconcile, methods=["POST"]),
    Route("/reports/health", reports.health, methods=["POST"]),
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
    Route("/trust/key-rotations", trust.publish, methods=["POST"]),
    Route("/trust/key-rotations", trust.listing, methods=["GET"]),
    Route("/desired-states", desired.create, methods=["POST"]),
    Route("/rollouts", rollouts.create, methods=["POST"]),
    Route("/rollouts", rollouts.listing, methods=["GET"]),
    Route("/rollouts/{rollout_id}", rollouts.one, methods=["GET"]),
    Route("/rollouts/{rollout_id}/pause", rollouts.pause_rollout, methods=["POST"]),
    Route("/rollouts/{rollout_id}/resume", rollouts.resume_rollout, methods=["POST"]),
    Route("/rollouts/{rollout_id}/rollback", rollouts.rollback_rollout, methods=["POST"]),
    Route("/tokens", tokens.issue, methods=["POST"]),
    Route("/tokens/{token_id}/revoke", tokens.revoke, methods=["POST"]),
    Route("/audit", audit.timeline, methods=["GET"]),
    Route("/audit/records", audit.records, methods=["GET"]),
    Route("/audit/verify", audit.verify, methods=["GET"]),
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


def create_app(
    settings: Settings,
    plane: ControlPlane | None = None,
    extensions: Sequence[Extension] = (),
) -> Edge:
    """The app of one serving process; the control plane is run by `bootstrap.serving`
    (`plane`: a shared one; `extensions`: e.g. `bootstrap.duties(settings)`). What the
    extensions yield is merged into the request state, and the duties held (`leases`)
    into the state's `leases`, which /readyz reports.

    `settings.role`: `api` and `all` serve the API; `worker` only the probes and metrics."""

    metrics = CloudMetrics()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with serving(settings, plane, extensions) as (cp, extra):
            state: dict[str, Any] = {"plane": cp, "metrics": metrics}
            if settings.serves_api:  # a worker serves no artifact, nor warns about its store
                state["artifacts"] = artifact_store(settings)
            detach = metrics.attach(cp, extra.get("bridge"), extra.get("controller"))
            try:
                yield {**state, **extra}
            finally:
                detach()

    # A worker answers its probes and its metrics; the API and the dashboard are the
    # api role's.
    routes = [*resources(ROUTES), dashboard()] if settings.serves_api else resources(WORKER)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers())
    inner: ASGIApp = FastLane(app) if settings.serves_api else app
    return Edge(inner, metrics, route_templates(routes))


def artifact_store(settings: Settings) -> ArtifactStore:
    if settings.is_memory and settings.artifact_dir is None:
        return MemoryArtifacts()
    return DirectoryArtifacts(artifact_dir(settings))


def artifact_dir(settings: Settings) -> Path:
    """Where hosted artifacts are kept on disk: `--artifact-dir`, else the data dir's
    `artifacts/` (the path deploy/kubernetes mounts the shared volume at)."""
    return settings.artifact_dir or settings.data_dir / "artifacts"
